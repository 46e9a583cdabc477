package wire_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// TestManifestTable runs the shared manifest table through DecodeManifest.
func TestManifestTable(t *testing.T) {
	pub := wiretest.Public(wire.CoordinatorID)
	for _, c := range wiretest.Manifests() {
		t.Run(c.Name, func(t *testing.T) {
			m, err := wire.DecodeManifest(c.Raw, pub, wiretest.Limits())
			if got := wire.ReasonOf(err); got != c.Reason {
				t.Fatalf("reason %q, want %q (err: %v)", got, c.Reason, err)
			}
			if (m != nil) != (c.Reason == wire.ReasonNone) {
				t.Fatalf("manifest %v with reason %q", m, c.Reason)
			}
		})
	}
}

// TestManifestSignatureCoversEveryField changes each field of a signed
// manifest (to a value that stays valid) and expects bad_signature.
func TestManifestSignatureCoversEveryField(t *testing.T) {
	pub := wiretest.Public(wire.CoordinatorID)
	if err := wire.VerifyManifest(wiretest.Manifest(), pub); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	muts := map[string]func(*fedgepb.ModelManifest){
		"model_id":        func(m *fedgepb.ModelManifest) { m.ModelId = "mnist-cnn" },
		"version":         func(m *fedgepb.ModelManifest) { m.Version++ },
		"wasm_hash":       func(m *fedgepb.ModelManifest) { m.WasmHash = wiretest.Hash("x") },
		"wasm_length":     func(m *fedgepb.ModelManifest) { m.WasmLength++ },
		"weights_hash":    func(m *fedgepb.ModelManifest) { m.WeightsHash = wiretest.Hash("y") },
		"weights_length":  func(m *fedgepb.ModelManifest) { m.WeightsLength += 4; m.ParamCount++ },
		"param_count":     func(m *fedgepb.ModelManifest) { m.WeightsLength -= 4; m.ParamCount-- },
		"round_id":        func(m *fedgepb.ModelManifest) { m.RoundId++ },
		"created_unix_ms": func(m *fedgepb.ModelManifest) { m.CreatedUnixMs++ },
		"signature":       func(m *fedgepb.ModelManifest) { m.Signature[3] ^= 0x10 },
	}
	if len(muts) != (&fedgepb.ModelManifest{}).ProtoReflect().Descriptor().Fields().Len() {
		t.Fatalf("test does not mutate every manifest field")
	}
	for name, mut := range muts {
		m := wiretest.Manifest()
		mut(m)
		if err := wire.VerifyManifest(m, pub); !errors.Is(err, wire.ErrBadSignature) {
			t.Errorf("%s changed: %v, want bad signature", name, err)
		}
	}
}

// TestManifestSigningBytesGolden pins the canonical manifest format.
func TestManifestSigningBytesGolden(t *testing.T) {
	m := &fedgepb.ModelManifest{ModelId: "m", Version: 2, WasmHash: []byte{0xaa}, WasmLength: 3,
		WeightsHash: []byte{0xbb, 0xcc}, WeightsLength: 8, ParamCount: 2, RoundId: 5, CreatedUnixMs: 6,
		Signature: []byte("ignored")}
	want := "0000000000000011" + hex.EncodeToString([]byte("fedge/v1 manifest")) +
		"0000000000000001" + "6d" +
		"0000000000000002" +
		"0000000000000001" + "aa" +
		"0000000000000003" +
		"0000000000000002" + "bbcc" +
		"0000000000000008" +
		"0000000000000002" +
		"0000000000000005" +
		"0000000000000006"
	if got := hex.EncodeToString(wire.ManifestSigningBytes(m)); got != want {
		t.Fatalf("manifest signing bytes\n got %s\nwant %s", got, want)
	}
}

func TestSignManifestRefusesInvalid(t *testing.T) {
	m := wiretest.Manifest()
	m.WasmHash = nil
	if err := wire.SignManifest(m, wiretest.Key(wire.CoordinatorID)); !errors.Is(err, wire.ErrBadField) {
		t.Fatalf("SignManifest of a manifest without wasm hash: %v", err)
	}
	m = wiretest.Manifest()
	old := append([]byte(nil), m.Signature...)
	m.Version = 9
	if err := wire.SignManifest(m, wiretest.Key(wire.CoordinatorID)); err != nil {
		t.Fatal(err)
	}
	if string(old) == string(m.Signature) {
		t.Fatalf("re-signing kept the old signature")
	}
	if err := wire.VerifyManifest(m, wiretest.Public(wire.CoordinatorID)); err != nil {
		t.Fatalf("re-signed manifest: %v", err)
	}
	if err := wire.VerifyManifest(nil, wiretest.Public(wire.CoordinatorID)); !errors.Is(err, wire.ErrBadField) {
		t.Fatalf("nil manifest: %v", err)
	}
	if err := wire.VerifyManifest(m, nil); !errors.Is(err, wire.ErrUnknownSender) {
		t.Fatalf("nil key: %v", err)
	}
	// Signing must not have touched anything but the signature.
	c := proto.Clone(m).(*fedgepb.ModelManifest)
	c.Signature = nil
	if c.Version != 9 || c.ModelId != "mnist-2nn" {
		t.Fatalf("SignManifest changed fields: %v", c)
	}
}
