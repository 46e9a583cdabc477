package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// stateStores returns a fresh store of each kind and a reopen function
// (nil for the memory store, which does not survive a restart).
func stateStores(t *testing.T) map[string]func() (StateStore, func() StateStore) {
	return map[string]func() (StateStore, func() StateStore){
		"memory": func() (StateStore, func() StateStore) { return NewMemoryStore(), nil },
		"badger": func() (StateStore, func() StateStore) {
			dir := t.TempDir()
			s, err := OpenBadgerStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() StateStore {
				s2, err := OpenBadgerStore(dir)
				if err != nil {
					t.Fatal(err)
				}
				return s2
			}
		},
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestStateStoreConformance(t *testing.T) {
	for name, mk := range stateStores(t) {
		t.Run(name, func(t *testing.T) {
			s, reopen := mk()
			if ok, err := s.Enrolled(); err != nil || ok {
				t.Fatalf("fresh store enrolled=%v err=%v", ok, err)
			}
			if tk, err := s.Task(); err != nil || tk != nil {
				t.Fatalf("fresh store task=%v err=%v", tk, err)
			}
			must(t, s.SetEnrolled())
			tk := train(3, 1)
			must(t, s.PutTask(tk))
			got, err := s.Task()
			must(t, err)
			if !proto.Equal(got, tk) {
				t.Fatalf("task %v, want %v", got, tk)
			}
			// Finishing another round leaves the task.
			must(t, s.FinishTask(pend(2, 9)))
			if got, _ := s.Task(); got == nil {
				t.Fatal("task of round 3 deleted by finishing round 2")
			}
			p3 := pend(3, 1)
			p3.Blob = []byte("delta blob")
			must(t, s.FinishTask(p3))
			if got, _ := s.Task(); got != nil {
				t.Fatal("task kept after FinishTask")
			}
			ps, err := s.Pending()
			must(t, err)
			if len(ps) != 2 || ps[0].RoundID != 2 || ps[1].RoundID != 3 || !bytes.Equal(ps[1].Blob, p3.Blob) ||
				!bytes.Equal(ps[1].MessageID, p3.MessageID) || !bytes.Equal(ps[1].Envelope, p3.Envelope) {
				t.Fatalf("pending %+v", ps)
			}
			must(t, s.Acked(2))
			must(t, s.PutTask(train(4, 1)))
			must(t, s.DropTask(4))
			if got, _ := s.Task(); got != nil {
				t.Fatal("task kept after DropTask")
			}
			done, err := s.Done()
			must(t, err)
			if !slices.Equal(done, []uint64{2, 4}) {
				t.Fatalf("done %v, want [2 4]", done)
			}
			if reopen != nil {
				must(t, s.Close())
				s = reopen()
				if ok, _ := s.Enrolled(); !ok {
					t.Fatal("enrollment lost on reopen")
				}
				ps, err := s.Pending()
				must(t, err)
				if len(ps) != 1 || ps[0].RoundID != 3 || !bytes.Equal(ps[0].Blob, p3.Blob) {
					t.Fatalf("pending after reopen %+v", ps)
				}
				if done, _ := s.Done(); !slices.Equal(done, []uint64{2, 4}) {
					t.Fatalf("done after reopen %v", done)
				}
			}
			for r := uint64(10); r < 10+MaxDoneRounds+5; r++ {
				must(t, s.DropTask(r))
			}
			done, _ = s.Done()
			if len(done) != MaxDoneRounds || done[len(done)-1] != 10+MaxDoneRounds+4 {
				t.Fatalf("done has %d entries, last %d", len(done), done[len(done)-1])
			}
			must(t, s.Close())
		})
	}
}

func TestDecodePending(t *testing.T) {
	good := encodePending(pend(5, 1))
	cases := map[string]struct {
		in []byte
		ok bool
	}{
		"good":          {good, true},
		"empty":         {nil, false},
		"truncated":     {good[:len(good)-1], false},
		"trailing":      {append(slices.Clone(good), 0), false},
		"round zero":    {encodePending(Pending{MessageID: make([]byte, 16), Envelope: []byte{1}}), false},
		"short id":      {encodePending(Pending{RoundID: 1, MessageID: []byte{1}, Envelope: []byte{1}}), false},
		"huge length":   {append(slices.Clone(good[:8]), 0xff, 0xff, 0xff, 0xff), false},
		"with blob":     {encodePending(Pending{RoundID: 1, MessageID: make([]byte, 16), Envelope: []byte{1}, Blob: []byte{2}}), true},
		"empty payload": {encodePending(Pending{RoundID: 1, MessageID: make([]byte, 16)}), false},
	}
	for name, c := range cases {
		p, err := decodePending(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", name, err, c.ok)
		}
		if err == nil && !bytes.Equal(encodePending(p), c.in) {
			t.Errorf("%s: does not round-trip", name)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v does not wrap ErrCorrupt", name, err)
		}
	}
}

func FuzzDecodePending(f *testing.F) {
	f.Add(encodePending(pend(5, 1)))
	f.Add(encodePending(Pending{RoundID: 1, MessageID: make([]byte, 16), Envelope: []byte{1}, Blob: []byte{2}}))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePending(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodePending(p), b) {
			t.Fatalf("accepted record does not round-trip")
		}
	})
}

// signedModel returns a manifest signed by key for the given bytes.
func signedModel(t testing.TB, key ed25519.PrivateKey, v uint64, wasm, weights []byte) Model {
	t.Helper()
	wh, gh := sha256.Sum256(wasm), sha256.Sum256(weights)
	m := &fedgepb.ModelManifest{ModelId: "m", Version: v, WasmHash: wh[:], WasmLength: uint64(len(wasm)),
		WeightsHash: gh[:], WeightsLength: uint64(len(weights)), ParamCount: uint64(len(weights) / 4)}
	if err := wire.SignManifest(m, key); err != nil {
		t.Fatal(err)
	}
	return Model{Manifest: m, Wasm: wasm, Weights: weights}
}

func TestModelStores(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	stores := map[string]func() ModelStore{
		"memory": func() ModelStore { return NewMemoryModelStore() },
		"dir": func() ModelStore {
			s, err := OpenDirModelStore(dir, pub)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			s := mk()
			if _, err := ActiveModel(s); !errors.Is(err, ErrNoModel) {
				t.Fatalf("empty store: %v", err)
			}
			bad := signedModel(t, key, 1, []byte("wasm"), []byte("weights!"))
			bad.Weights = []byte("weightsX")
			if err := s.Install(bad); !errors.Is(err, ErrModelMismatch) {
				t.Fatalf("install with wrong hash: %v", err)
			}
			for v := uint64(1); v <= 5; v++ {
				must(t, s.Install(signedModel(t, key, v, []byte{'w', byte(v)}, []byte{1, 2, 3, byte(v)})))
			}
			vs, err := s.Versions()
			must(t, err)
			var got []uint64
			for _, m := range vs {
				got = append(got, m.Version)
			}
			if !slices.Equal(got, []uint64{5, 4, 3}) {
				t.Fatalf("versions %v, want [5 4 3]", got)
			}
			prev, err := s.Load(4)
			must(t, err)
			if prev.Weights[3] != 4 {
				t.Fatalf("v4 weights %v", prev.Weights)
			}
			if _, err := s.Load(1); !errors.Is(err, ErrUnknownModel) {
				t.Fatalf("pruned v1: %v", err)
			}
			act, err := ActiveModel(s)
			must(t, err)
			if act.Manifest.Version != 5 {
				t.Fatalf("active v%d", act.Manifest.Version)
			}
		})
	}
	t.Run("dir survives reopen and rejects tampering", func(t *testing.T) {
		s, err := OpenDirModelStore(dir, pub)
		must(t, err)
		act, err := ActiveModel(s)
		must(t, err)
		if act.Manifest.Version != 5 {
			t.Fatalf("active after reopen v%d", act.Manifest.Version)
		}
		must(t, os.WriteFile(filepath.Join(dir, versionDir(5), weightsFile), []byte{9, 9, 9, 9}, 0o600))
		if _, err := s.Load(5); !errors.Is(err, ErrModelMismatch) {
			t.Fatalf("tampered weights: %v", err)
		}
		other, _, _ := ed25519.GenerateKey(nil)
		s2, err := OpenDirModelStore(dir, other)
		must(t, err)
		if _, err := s2.Load(4); wire.ReasonOf(err) != wire.ReasonBadSignature {
			t.Fatalf("manifest under another key: %v", err)
		}
	})
	t.Run("interrupted install leaves the previous version active", func(t *testing.T) {
		d := t.TempDir()
		s, err := OpenDirModelStore(d, pub)
		must(t, err)
		must(t, s.Install(signedModel(t, key, 1, []byte("w1"), []byte{1, 2, 3, 4})))
		// A crash mid-install leaves a temporary directory behind.
		must(t, os.MkdirAll(filepath.Join(d, tmpPrefix+"123", "junk"), 0o700))
		s, err = OpenDirModelStore(d, pub)
		must(t, err)
		act, err := ActiveModel(s)
		must(t, err)
		if act.Manifest.Version != 1 {
			t.Fatalf("active v%d", act.Manifest.Version)
		}
		if _, err := os.Stat(filepath.Join(d, tmpPrefix+"123")); !os.IsNotExist(err) {
			t.Fatalf("leftover not removed: %v", err)
		}
	})
}

func FuzzDecodeTask(f *testing.F) {
	good, _ := proto.Marshal(trainTask(3, &fedgepb.ModelManifest{ModelId: "m", Version: 1, WeightsHash: make([]byte, 32)}, 1))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x00})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := decodeTask(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if tk.RoundId == 0 || len(tk.BaseModelHash) != 32 {
			t.Fatalf("accepted invalid task %v", tk)
		}
	})
}
