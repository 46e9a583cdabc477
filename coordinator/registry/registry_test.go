package registry

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	wasmmodels "github.com/fedge-dev/fedge/wasm-models"
)

func key(seed byte) ed25519.PublicKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
}

func apply(t *testing.T, st store.Store, d *Devices, b *store.Batch) {
	t.Helper()
	if err := st.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	d.Committed(b)
}

func TestDeviceEnrollment(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	d, err := NewDevices(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	tok, b, err := d.Add(ctx, "dev-1", 1000, 5000)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, st, d, b)
	for _, id := range []string{"coordinator", "coordinator-default", "Coordinator-itest", "coord"} {
		if _, _, err := d.Add(ctx, id, 0, 0); !errors.Is(err, topics.ErrReservedID) {
			t.Fatalf("reserved id %q: %v", id, err)
		}
	}
	if _, _, err := d.Add(ctx, "a/b", 0, 0); !errors.Is(err, topics.ErrInvalidID) {
		t.Fatalf("bad id: %v", err)
	}
	req := func(id string, k ed25519.PublicKey, token string) *fedgepb.EnrollRequest {
		return &fedgepb.EnrollRequest{DeviceId: id, PublicKey: k, EnrollmentToken: token}
	}
	if resp, _, err := d.Enroll(ctx, req("coordinator-default", make(ed25519.PublicKey, ed25519.PublicKeySize), ""), 1000); err != nil || resp.Accepted || resp.Reason != RefuseReservedID {
		t.Fatalf("enrollment of a reserved id: %v %v", resp, err)
	}
	cases := []struct {
		name     string
		req      *fedgepb.EnrollRequest
		now      int64
		accepted bool
		pending  bool
		reason   string
	}{
		{"short key", req("dev-1", key(1)[:10], tok), 2000, false, false, RefuseBadKey},
		{"wrong token", req("dev-1", key(1), "nope"), 2000, false, false, RefuseBadToken},
		{"token of another device", req("dev-2", key(2), tok), 2000, false, false, RefuseBadToken},
		{"expired token", req("dev-1", key(1), tok), 6000, false, false, RefuseBadToken},
		{"valid token", req("dev-1", key(1), tok), 2000, true, false, ""},
		{"token used up, same key", req("dev-1", key(1), tok), 2000, true, false, ""},
		{"another key", req("dev-1", key(9), ""), 2000, false, false, RefuseKeyChanged},
		{"no token", req("dev-3", key(3), ""), 2000, false, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b, err := d.Enroll(ctx, c.req, c.now)
			if err != nil {
				t.Fatal(err)
			}
			apply(t, st, d, b)
			if resp.Accepted != c.accepted || resp.PendingApproval != c.pending || resp.Reason != c.reason || resp.DeviceId != c.req.DeviceId {
				t.Fatalf("response %+v", resp)
			}
		})
	}
	if !d.Approved("dev-1") || d.Approved("dev-3") {
		t.Fatal("approval state wrong")
	}
	if _, err := st.Token(ctx, HashToken(tok)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("used token still stored: %v", err)
	}
	if _, err := d.Approve(ctx, "dev-9", 0); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("approve unknown: %v", err)
	}
	b, err = d.Approve(ctx, "dev-3", 3000)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, st, d, b)
	if !d.Approved("dev-3") {
		t.Fatal("dev-3 not approved")
	}
	// The key function knows approved devices only, and verifies
	// enrollment requests with their own key.
	kf := d.KeyFunc()
	if k, err := kf(&wire.Envelope{Sender: "dev-3"}); err != nil || !k.Equal(key(3)) {
		t.Fatalf("key of dev-3: %v", err)
	}
	if _, err := kf(&wire.Envelope{Sender: "dev-7"}); !errors.Is(err, wire.ErrUnknownSender) {
		t.Fatalf("unknown: %v", err)
	}
	if k, err := kf(&wire.Envelope{Sender: "dev-7", Msg: req("dev-7", key(7), "")}); err != nil || !k.Equal(key(7)) {
		t.Fatalf("enrollment key: %v", err)
	}
	// A restart reloads the approved keys.
	d2, err := NewDevices(ctx, st)
	if err != nil || !d2.Approved("dev-1") || !d2.Approved("dev-3") {
		t.Fatalf("reload: %v", err)
	}
	rec, err := d2.Presence(ctx, "dev-1", true, &fedgepb.Capabilities{Arch: "arm64"}, 4000)
	if err != nil || !rec.Online || rec.Capabilities.Arch != "arm64" || rec.LastSeenUnixMs != 4000 {
		t.Fatalf("presence %+v %v", rec, err)
	}
	if rec, err := d2.Presence(ctx, "dev-7", true, nil, 0); rec != nil || err != nil {
		t.Fatalf("presence of an unknown device %+v %v", rec, err)
	}
}

func TestCredentialFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.json")
	c, err := OpenCredentialFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pw, _, err := c.IssueDevice("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.IssueDevice("bad id"); err == nil {
		t.Fatal("bad id accepted")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v %v", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), pw) {
		t.Fatal("password stored in clear")
	}
	c2, err := OpenCredentialFile(path)
	if err != nil || len(c2.Users()) != 1 {
		t.Fatalf("reopen %v %v", c2.Users(), err)
	}
	bc := broker.NewCredentials()
	if err := c2.Install(bc, "fleet"); err != nil {
		t.Fatal(err)
	}
	if id, ok := bc.Lookup("dev-1"); !ok || id.Role != topics.RoleDevice || id.ID != "dev-1" {
		t.Fatalf("installed %+v %v", id, ok)
	}
}

func TestParseCredentials(t *testing.T) {
	h, _ := broker.HashSecret(make([]byte, 32))
	for _, c := range []struct {
		name, raw string
		ok        bool
	}{
		{"empty doc", `{}`, true},
		{"good", `{"users":{"dev-1":{"hash":"` + h.String() + `","device":"dev-1"}}}`, true},
		{"coordinator", `{"users":{"coord":{"hash":"` + h.String() + `"}}}`, true},
		{"device mismatch", `{"users":{"dev-1":{"hash":"` + h.String() + `","device":"dev-2"}}}`, false},
		{"bad hash", `{"users":{"dev-1":{"hash":"md5$x$y"}}}`, false},
		{"bad user", `{"users":{"a/b":{"hash":"` + h.String() + `"}}}`, false},
		{"not json", `users`, false},
	} {
		if _, err := parseCredentials([]byte(c.raw)); (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.name, err)
		}
	}
}

func FuzzParseCredentials(f *testing.F) {
	h, _ := broker.HashSecret(make([]byte, 32))
	for _, s := range []string{`{}`, `{"users":{"dev-1":{"hash":"` + h.String() + `","device":"dev-1"}}}`, `{"users":{"x":{"hash":"sha256$$"}}}`, `[`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		users, err := parseCredentials(raw)
		if err != nil {
			return
		}
		for u, e := range users {
			if topics.ValidateID(u) != nil || (e.Device != "" && e.Device != u) {
				t.Fatalf("accepted bad entry %q %+v", u, e)
			}
			if _, err := broker.ParseSecretHash(e.Hash); err != nil {
				t.Fatalf("accepted bad hash %q", e.Hash)
			}
		}
	})
}

func TestModels(t *testing.T) {
	ctx := context.Background()
	host, err := runtime.NewHost(ctx, runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(ctx)
	dir := t.TempDir()
	m, err := NewModels(dir, host, "logreg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewModels(dir, host, "nosuch"); err == nil {
		t.Fatal("unknown builtin accepted")
	}
	lr, err := m.Get(ctx, "logreg")
	if err != nil || !lr.Builtin || lr.Meta.Params != 7850 {
		t.Fatalf("logreg %+v %v", lr, err)
	}
	if _, err := m.Get(ctx, "mlp"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("mlp is not offered here: %v", err)
	}
	// A user module implementing the ABI (here: the mlp's bytes).
	mine, err := m.Add(ctx, "mymlp", wasmmodels.MustGet("mlp").Wasm)
	if err != nil || mine.Builtin || mine.Meta.Params != 199210 {
		t.Fatalf("add %+v %v", mine, err)
	}
	hostile, err := os.ReadFile("../../edgeagent/runtime/testdata/hostile/missing_export.wasm")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		wasm []byte
		want error
	}{
		{"mymlp", wasmmodels.MustGet("mlp").Wasm, ErrExists},
		{"logreg", wasmmodels.MustGet("logreg").Wasm, ErrExists},
		{"bad.name", []byte{0}, topics.ErrInvalidID},
		{"garbage", []byte("not wasm"), runtime.ErrCompile},
		{"noexport", hostile, runtime.ErrMissingExport},
	} {
		if _, err := m.Add(ctx, c.name, c.wasm); !errors.Is(err, c.want) {
			t.Errorf("add %s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "garbage.wasm")); !os.IsNotExist(err) {
		t.Fatal("invalid module written")
	}
	// A new registry on the same directory finds the user module.
	m2, _ := NewModels(dir, host, "logreg")
	list, err := m2.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "logreg" || list[1].Name != "mymlp" {
		t.Fatalf("list %v %v", list, err)
	}
	w1, err := m2.InitialWeights(ctx, "logreg", 1)
	if err != nil || len(w1) != 7850 {
		t.Fatalf("initial weights %d %v", len(w1), err)
	}
}
