// Package storetest is the conformance suite every store.Store passes: the
// Badger store and the in-memory twin run the same tests.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Run runs the suite; open returns a new, empty store for each subtest (the
// suite closes it).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"NotFound", testNotFound},
		{"Overwrite", testOverwrite},
		{"Listings", testListings},
		{"UpdatesInFlight", testUpdatesInFlight},
		{"Atomicity", testAtomicity},
		{"Invalid", testInvalid},
		{"Audit", testAudit},
		{"Tokens", testTokens},
		{"Sequences", testSequences},
		{"Copies", testCopies},
		{"Concurrent", testConcurrent},
		{"Context", testContext},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			defer func() {
				if r := recover(); r != nil {
					if m, ok := r.(mustError); ok {
						t.Fatalf("unexpected error: %v", m.err)
					}
					panic(r)
				}
			}()
			tc.fn(t, s)
		})
	}
}

// Sample records. Each call returns fresh values.

// SampleRun returns a valid run record.
func SampleRun(id uint64) *store.Run {
	return &store.Run{
		RunId: id, State: fedgepb.RunState_RUN_STATE_RUNNING, CurrentRound: id * 10, StartedUnixMs: 1000,
		Config: &fedgepb.RunConfig{
			ModelId: "mlp", Strategy: "fedavg", Fraction: 0.5, MinClients: 2, MaxClients: 8,
			TagFilter: map[string]string{"region": "eu"}, Rounds: 5, Seed: 42,
			Train: &fedgepb.TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.1},
		},
	}
}

// SampleRound returns a valid round record of run.
func SampleRound(id, run uint64) *store.Round {
	return &store.Round{
		RoundId: id, RunId: run, Phase: fedgepb.RoundPhase_ROUND_PHASE_TRAINING, ModelId: "mlp",
		BaseVersion: 1, BaseHash: make([]byte, 32), DeadlineUnixMs: 5000,
		Selected: []*fedgepb.SelectedDevice{
			{DeviceId: "dev-a", Nonce: []byte("nonce-a")},
			{DeviceId: "dev-b", Nonce: []byte("nonce-b")},
		},
		Rejections: map[string]uint64{"stale_base": 2},
	}
}

// SampleUpdate returns a valid in-flight update.
func SampleUpdate(round uint64, device string, arrival uint32) *store.Update {
	return &store.Update{
		RoundId: round, DeviceId: device, MessageId: []byte("msg-" + device), SampleCount: 100,
		Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: []byte{0, 0, 128, 63}, Arrival: arrival,
		Metrics: &fedgepb.TrainMetrics{Loss: 0.5, Accuracy: 0.8},
	}
}

// SampleModelVersion returns a valid model version with weights.
func SampleModelVersion(version, parent uint64) *store.ModelVersion {
	w := []byte{1, 2, 3, 4, 5, 6, 7, byte(version)}
	h := sha256.Sum256(w)
	return &store.ModelVersion{
		Version: version, ModelId: "mlp", ParentVersion: parent, RoundId: version * 10, RunId: 1,
		Strategy: "fedavg", Participants: 3, Weights: w, WeightsHash: h[:], Manifest: []byte("manifest"),
		Metrics: &fedgepb.RoundMetrics{RunId: 1, RoundId: version * 10, EvalAccuracy: 0.9},
	}
}

// SampleDevice returns a valid device.
func SampleOptimizer(run, version uint64) *store.Optimizer {
	return &store.Optimizer{RunId: run, ModelVersion: version, Strategy: "fedadam", Steps: version,
		M: []float64{0.5, -0.25, 1e-9}, V: []float64{0.25, 0.0625, 1e-18}}
}

func SampleDevice(id string) *store.Device {
	return &store.Device{
		DeviceId: id, PublicKey: make([]byte, 32), EnrollState: fedgepb.EnrollState_ENROLL_STATE_APPROVED,
		Online: true, LastSeenUnixMs: 77,
		Capabilities: &fedgepb.Capabilities{Arch: "arm64", MemoryBytes: 1 << 30, SampleCount: 600, Tags: map[string]string{"region": "eu"}},
	}
}

// SampleToken returns a valid enrollment token record for secret.
func SampleToken(secret string) *store.Token {
	h := sha256.Sum256([]byte(secret))
	return &store.Token{TokenHash: h[:], Label: secret, UsesLeft: 3, ExpiresUnixMs: 99}
}

func apply(t *testing.T, s store.Store, b *store.Batch) {
	t.Helper()
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func mustEqual(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// mustError is the panic value of must; Run turns it into t.Fatal.
type mustError struct{ err error }

// must returns v, or fails the running subtest if err is not nil.
func must[T any](v T, err error) T {
	if err != nil {
		panic(mustError{err})
	}
	return v
}

func testRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	run, round, up := SampleRun(1), SampleRound(10, 1), SampleUpdate(10, "dev-a", 0)
	mv, dev, met, tok := SampleModelVersion(1, 0), SampleDevice("dev-a"), &store.Metrics{RunId: 1, RoundId: 10, Accepted: 2, TrainLoss: 0.3}, SampleToken("s3cret")
	opt := SampleOptimizer(1, 1)
	apply(t, s, &store.Batch{Runs: []*store.Run{run}, Rounds: []*store.Round{round}, Updates: []*store.Update{up},
		ModelVersions: []*store.ModelVersion{mv}, Devices: []*store.Device{dev}, Metrics: []*store.Metrics{met}, Tokens: []*store.Token{tok},
		Optimizers: []*store.Optimizer{opt}})
	mustEqual(t, "optimizer state", must(s.Optimizer(ctx, 1)), opt)

	mustEqual(t, "run", must(s.Run(ctx, 1)), run)
	mustEqual(t, "round", must(s.Round(ctx, 10)), round)
	ups := must(s.Updates(ctx, 10))
	if len(ups) != 1 {
		t.Fatalf("Updates: got %d, want 1", len(ups))
	}
	mustEqual(t, "update", ups[0], up)
	mustEqual(t, "model version", must(s.ModelVersion(ctx, 1)), mv)
	mustEqual(t, "device", must(s.Device(ctx, "dev-a")), dev)
	mets := must(s.Metrics(ctx, 1))
	if len(mets) != 1 {
		t.Fatalf("Metrics: got %d, want 1", len(mets))
	}
	mustEqual(t, "metrics", mets[0], met)
	mustEqual(t, "token", must(s.Token(ctx, tok.TokenHash)), tok)
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := sha256.Sum256([]byte("x"))
	cases := []struct {
		name string
		err  error
	}{
		{"run", second(s.Run(ctx, 1))},
		{"round", second(s.Round(ctx, 1))},
		{"model version", second(s.ModelVersion(ctx, 1))},
		{"device", second(s.Device(ctx, "nobody"))},
		{"token", second(s.Token(ctx, h[:]))},
		{"optimizer state", second(s.Optimizer(ctx, 1))},
	}
	for _, c := range cases {
		if !errors.Is(c.err, store.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", c.name, c.err)
		}
	}
	if id := must(s.LatestRoundID(ctx)); id != 0 {
		t.Errorf("LatestRoundID of empty store = %d", id)
	}
	if v := must(s.LatestModelVersion(ctx)); v != 0 {
		t.Errorf("LatestModelVersion of empty store = %d", v)
	}
	if ups := must(s.Updates(ctx, 3)); len(ups) != 0 {
		t.Errorf("Updates of empty store = %v", ups)
	}
}

func second[T any](_ T, err error) error { return err }

func testOverwrite(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := SampleRound(3, 1)
	apply(t, s, &store.Batch{Rounds: []*store.Round{r}})
	r2 := SampleRound(3, 1)
	r2.Phase = fedgepb.RoundPhase_ROUND_PHASE_DONE
	r2.Accepted = 7
	apply(t, s, &store.Batch{Rounds: []*store.Round{r2}})
	mustEqual(t, "overwritten round", must(s.Round(ctx, 3)), r2)
	d := SampleDevice("dev-z")
	apply(t, s, &store.Batch{Devices: []*store.Device{d}})
	d.Online = false
	apply(t, s, &store.Batch{Devices: []*store.Device{d}})
	if got := must(s.Device(ctx, "dev-z")); got.Online {
		t.Error("device overwrite lost: still online")
	}
	apply(t, s, &store.Batch{Optimizers: []*store.Optimizer{SampleOptimizer(2, 4)}})
	o := SampleOptimizer(2, 5)
	o.V = nil
	apply(t, s, &store.Batch{Optimizers: []*store.Optimizer{o}})
	mustEqual(t, "replaced optimizer state", must(s.Optimizer(ctx, 2)), o)
}

func testListings(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := &store.Batch{}
	for _, id := range []uint64{300, 2, 17, 256} { // out of order, crossing a byte boundary
		b.Runs = append(b.Runs, SampleRun(id))
		b.Rounds = append(b.Rounds, SampleRound(id, 1+id%2))
		b.Metrics = append(b.Metrics, &store.Metrics{RunId: 1 + id%2, RoundId: id})
	}
	for _, v := range []uint64{3, 1, 2, 260} {
		b.ModelVersions = append(b.ModelVersions, SampleModelVersion(v, v-1))
	}
	for _, d := range []string{"c", "a", "b"} {
		b.Devices = append(b.Devices, SampleDevice(d))
	}
	apply(t, s, b)

	ids := func(n int, id func(int) uint64) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = id(i)
		}
		return out
	}
	runs := must(s.Runs(ctx))
	checkIDs(t, "runs", ids(len(runs), func(i int) uint64 { return runs[i].RunId }), 2, 17, 256, 300)
	all := must(s.Rounds(ctx, 0))
	checkIDs(t, "rounds", ids(len(all), func(i int) uint64 { return all[i].RoundId }), 2, 17, 256, 300)
	odd := must(s.Rounds(ctx, 2)) // run 2 holds the odd round ids
	checkIDs(t, "rounds of run 2", ids(len(odd), func(i int) uint64 { return odd[i].RoundId }), 17)
	mets := must(s.Metrics(ctx, 1))
	checkIDs(t, "metrics of run 1", ids(len(mets), func(i int) uint64 { return mets[i].RoundId }), 2, 256, 300)
	if id := must(s.LatestRoundID(ctx)); id != 300 {
		t.Errorf("LatestRoundID = %d, want 300", id)
	}
	vs := must(s.ModelVersions(ctx, false))
	checkIDs(t, "versions", ids(len(vs), func(i int) uint64 { return vs[i].Version }), 1, 2, 3, 260)
	if vs[0].Weights != nil || vs[0].Manifest != nil || len(vs[0].WeightsHash) != 32 {
		t.Errorf("ModelVersions(false) kept blobs or lost the hash: %v", vs[0])
	}
	full := must(s.ModelVersions(ctx, true))
	mustEqual(t, "version with blobs", full[3], SampleModelVersion(260, 259))
	if v := must(s.LatestModelVersion(ctx)); v != 260 {
		t.Errorf("LatestModelVersion = %d, want 260", v)
	}
	devs := must(s.Devices(ctx))
	if len(devs) != 3 || devs[0].DeviceId != "a" || devs[2].DeviceId != "c" {
		t.Errorf("Devices not sorted by id: %v", devs)
	}
}

func checkIDs(t *testing.T, what string, got []uint64, want ...uint64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got ids %v, want %v", what, got, want)
	}
}

func testUpdatesInFlight(t *testing.T, s store.Store) {
	ctx := context.Background()
	apply(t, s, &store.Batch{Updates: []*store.Update{
		SampleUpdate(5, "zed", 0), SampleUpdate(5, "amy", 1), SampleUpdate(5, "bob", 2),
		SampleUpdate(6, "amy", 0), SampleUpdate(256, "amy", 0),
	}})
	ups := must(s.Updates(ctx, 5))
	var devs []string
	for _, u := range ups {
		devs = append(devs, u.DeviceId)
	}
	if fmt.Sprint(devs) != "[zed amy bob]" {
		t.Fatalf("updates of round 5 in arrival order: got %v", devs)
	}
	// Commit of round 5: delete its updates, and in the same batch a new
	// update of round 5 is put (puts follow deletes).
	apply(t, s, &store.Batch{DeleteUpdates: []uint64{5}, Updates: []*store.Update{SampleUpdate(5, "late", 9)}})
	ups = must(s.Updates(ctx, 5))
	if len(ups) != 1 || ups[0].DeviceId != "late" {
		t.Fatalf("after delete+put: got %v", ups)
	}
	if n := len(must(s.Updates(ctx, 6))); n != 1 {
		t.Errorf("round 6 lost updates: %d left", n)
	}
	if n := len(must(s.Updates(ctx, 256))); n != 1 {
		t.Errorf("round 256 lost updates: %d left", n)
	}
}

func testAtomicity(t *testing.T, s store.Store) {
	ctx := context.Background()
	apply(t, s, &store.Batch{Updates: []*store.Update{SampleUpdate(1, "a", 0)}})
	bad := SampleModelVersion(2, 1)
	bad.WeightsHash = make([]byte, 32) // does not match
	err := s.Apply(ctx, &store.Batch{
		Runs:          []*store.Run{SampleRun(1)},
		DeleteUpdates: []uint64{1},
		ModelVersions: []*store.ModelVersion{SampleModelVersion(1, 0), bad},
		Audit:         []*store.AuditEntry{{Actor: "admin", Action: "round start"}},
	})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Apply of a batch with an invalid record: got %v, want ErrInvalid", err)
	}
	if _, err := s.Run(ctx, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("run of a failed batch persisted: %v", err)
	}
	if v := must(s.LatestModelVersion(ctx)); v != 0 {
		t.Errorf("model version of a failed batch persisted: %d", v)
	}
	if n := len(must(s.Updates(ctx, 1))); n != 1 {
		t.Errorf("delete of a failed batch applied: %d updates left", n)
	}
	if a := must(s.Audit(ctx, 0, 0)); len(a) != 0 {
		t.Errorf("audit of a failed batch appended: %v", a)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	noModel := SampleRun(1)
	noModel.Config.ModelId = ""
	badParent := SampleModelVersion(3, 3)
	oddWeights := SampleModelVersion(3, 2)
	oddWeights.Weights = oddWeights.Weights[:3]
	badKey := SampleDevice("d")
	badKey.PublicKey = []byte{1}
	badSel := SampleRound(1, 1)
	badSel.Selected[0].DeviceId = "a/b"
	badMoments := SampleOptimizer(1, 1)
	badMoments.V = badMoments.V[:1]
	nanMoment := SampleOptimizer(1, 1)
	nanMoment.M[1] = math.NaN()
	cases := []struct {
		name string
		b    *store.Batch
	}{
		{"nil batch", nil},
		{"nil run", &store.Batch{Runs: []*store.Run{nil}}},
		{"run id 0", &store.Batch{Runs: []*store.Run{SampleRun(0)}}},
		{"run without model", &store.Batch{Runs: []*store.Run{noModel}}},
		{"round id 0", &store.Batch{Rounds: []*store.Round{SampleRound(0, 1)}}},
		{"round without run", &store.Batch{Rounds: []*store.Round{SampleRound(1, 0)}}},
		{"selected device with slash", &store.Batch{Rounds: []*store.Round{badSel}}},
		{"update round 0", &store.Batch{Updates: []*store.Update{SampleUpdate(0, "a", 0)}}},
		{"update device empty", &store.Batch{Updates: []*store.Update{SampleUpdate(1, "", 0)}}},
		{"update device with slash", &store.Batch{Updates: []*store.Update{SampleUpdate(1, "a/b", 0)}}},
		{"version 0", &store.Batch{ModelVersions: []*store.ModelVersion{SampleModelVersion(0, 0)}}},
		{"parent not older", &store.Batch{ModelVersions: []*store.ModelVersion{badParent}}},
		{"weights not float32", &store.Batch{ModelVersions: []*store.ModelVersion{oddWeights}}},
		{"device key length", &store.Batch{Devices: []*store.Device{badKey}}},
		{"metrics ids", &store.Batch{Metrics: []*store.Metrics{{RoundId: 1}}}},
		{"audit without action", &store.Batch{Audit: []*store.AuditEntry{{Actor: "a"}}}},
		{"audit with seq", &store.Batch{Audit: []*store.AuditEntry{{Actor: "a", Action: "b", Seq: 4}}}},
		{"token hash length", &store.Batch{Tokens: []*store.Token{{TokenHash: []byte("short")}}}},
		{"optimizer run 0", &store.Batch{Optimizers: []*store.Optimizer{SampleOptimizer(0, 1)}}},
		{"optimizer version 0", &store.Batch{Optimizers: []*store.Optimizer{SampleOptimizer(1, 0)}}},
		{"optimizer moments differ in length", &store.Batch{Optimizers: []*store.Optimizer{badMoments}}},
		{"nil optimizer", &store.Batch{Optimizers: []*store.Optimizer{nil}}},
		{"optimizer NaN moment", &store.Batch{Optimizers: []*store.Optimizer{nanMoment}}},
		{"delete updates of round 0", &store.Batch{DeleteUpdates: []uint64{0}}},
		{"delete token hash length", &store.Batch{DeleteTokens: [][]byte{{1}}}},
	}
	for _, c := range cases {
		if err := s.Apply(context.Background(), c.b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", c.name, err)
		}
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := range 5 {
		apply(t, s, &store.Batch{Audit: []*store.AuditEntry{
			{Actor: "admin", Action: "round start", Target: fmt.Sprint(i), UnixMs: int64(i)},
			{Actor: "admin", Action: "models rollback", Target: fmt.Sprint(i)},
		}})
	}
	all := must(s.Audit(ctx, 0, 0))
	if len(all) != 10 {
		t.Fatalf("audit entries: got %d, want 10", len(all))
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d, want %d", i, e.Seq, i+1)
		}
	}
	if all[2].Target != "1" || all[2].Action != "round start" {
		t.Errorf("entry 3 = %v", all[2])
	}
	page := must(s.Audit(ctx, 4, 3))
	checkIDs(t, "audit page after 4", []uint64{page[0].Seq, page[1].Seq, page[2].Seq}, 5, 6, 7)
	if len(page) != 3 {
		t.Errorf("limit 3 returned %d", len(page))
	}
	if rest := must(s.Audit(ctx, 10, 0)); len(rest) != 0 {
		t.Errorf("after the last seq: %v", rest)
	}
	if rest := must(s.Audit(ctx, math.MaxUint64, 0)); len(rest) != 0 {
		t.Errorf("after the largest seq: %v", rest)
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := SampleToken("a"), SampleToken("b")
	apply(t, s, &store.Batch{Tokens: []*store.Token{a, b}})
	a.UsesLeft = 1
	apply(t, s, &store.Batch{Tokens: []*store.Token{a}, DeleteTokens: [][]byte{b.TokenHash}})
	mustEqual(t, "used token", must(s.Token(ctx, a.TokenHash)), a)
	if _, err := s.Token(ctx, b.TokenHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted token: %v", err)
	}
	if _, err := s.Token(ctx, []byte("short")); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("short hash: got %v, want ErrInvalid", err)
	}
}

func testSequences(t *testing.T, s store.Store) {
	ctx := context.Background()
	for want := uint64(1); want <= 3; want++ {
		if got := must(s.NextSequence(ctx, "run")); got != want {
			t.Fatalf("NextSequence(run) = %d, want %d", got, want)
		}
	}
	if got := must(s.NextSequence(ctx, "other")); got != 1 {
		t.Errorf("independent sequence starts at %d", got)
	}
	if _, err := s.NextSequence(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("empty name: got %v", err)
	}
	const workers, each = 4, 25
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				v, err := s.NextSequence(ctx, "conc")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[v] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for v := uint64(1); v <= workers*each; v++ {
		if !seen[v] {
			t.Fatalf("concurrent NextSequence skipped or repeated %d (%d distinct values)", v, len(seen))
		}
	}
}

func testCopies(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := SampleRound(1, 1)
	apply(t, s, &store.Batch{Rounds: []*store.Round{r}})
	r.Accepted = 99 // the caller's record is not retained
	r.Selected[0].Nonce[0] = 'X'
	got := must(s.Round(ctx, 1))
	mustEqual(t, "stored round after caller mutation", got, SampleRound(1, 1))
	got.Selected = nil // nor is a returned record shared
	mustEqual(t, "stored round after reader mutation", must(s.Round(ctx, 1)), SampleRound(1, 1))
}

func testConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const workers, each = 4, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				dev := fmt.Sprintf("w%d-%d", w, i)
				b := &store.Batch{
					Updates: []*store.Update{SampleUpdate(7, dev, uint32(w*each+i))},
					Audit:   []*store.AuditEntry{{Actor: dev, Action: "x"}},
				}
				if err := s.Apply(ctx, b); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Updates(ctx, 7); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(must(s.Updates(ctx, 7))); n != workers*each {
		t.Errorf("concurrent applies: %d updates, want %d", n, workers*each)
	}
	audit := must(s.Audit(ctx, 0, 0))
	if len(audit) != workers*each || audit[len(audit)-1].Seq != workers*each {
		t.Errorf("concurrent audit appends: %d entries, last seq %d", len(audit), audit[len(audit)-1].Seq)
	}
}

func testContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Apply(ctx, &store.Batch{Runs: []*store.Run{SampleRun(1)}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a canceled context: %v", err)
	}
	if _, err := s.Run(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a canceled context: %v", err)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	errs := []error{
		s.Apply(ctx, &store.Batch{Runs: []*store.Run{SampleRun(1)}}),
		second(s.Run(ctx, 1)), second(s.Runs(ctx)), second(s.Updates(ctx, 1)),
		second(s.LatestModelVersion(ctx)), second(s.Devices(ctx)), second(s.Audit(ctx, 0, 0)),
		second(s.NextSequence(ctx, "x")),
	}
	for i, err := range errs {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("call %d after Close: got %v, want ErrClosed", i, err)
		}
	}
}
