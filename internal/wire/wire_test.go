package wire_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

var now = time.UnixMilli(wiretest.Timestamp)

// TestSealOpenRoundTrip seals every good payload type, opens it, and checks
// that every field and the payload survive and the signature verifies.
func TestSealOpenRoundTrip(t *testing.T) {
	for _, typ := range wiretest.PayloadTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			msg, topic := wiretest.Good(typ)
			sender := senderOf(topic, msg)
			raw, err := wire.Seal(wiretest.Key(sender), sender, typ, msg, now)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			env, err := wire.Open(raw, wiretest.Limits())
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if env.Version != wire.ProtocolVersion || env.Sender != sender || env.Type != typ ||
				len(env.MessageID) != wire.MessageIDSize || !env.Time().Equal(now) {
				t.Fatalf("envelope fields %+v", env)
			}
			if !proto.Equal(env.Msg, msg) {
				t.Fatalf("payload %v, want %v", env.Msg, msg)
			}
			if err := wire.Verify(env, wiretest.Public(sender)); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if err := wire.CheckSender(topic, env); err != nil {
				t.Fatalf("CheckSender: %v", err)
			}
			if _, err := wire.Accept(topic, raw, wiretest.Limits(), wiretest.Keys()); err != nil {
				t.Fatalf("Accept: %v", err)
			}
			again, err := env.Marshal()
			if err != nil || !bytes.Equal(again, raw) {
				t.Fatalf("re-marshal differs (%v)", err)
			}
		})
	}
}

// senderOf is who sends msg on topic in the table.
func senderOf(topic string, msg proto.Message) string {
	switch m := msg.(type) {
	case *fedgepb.EnrollRequest:
		return m.DeviceId
	}
	if bytes.Contains([]byte(topic), []byte("/out/")) {
		return wiretest.Device
	}
	return wire.CoordinatorID
}

func TestSealMessageIDsAreRandom(t *testing.T) {
	msg, _ := wiretest.Good(fedgepb.PayloadType_PAYLOAD_TYPE_STATUS)
	seen := map[string]bool{}
	for range 100 {
		env, err := wire.SealEnvelope(wiretest.Key(wiretest.Device), wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, msg, now)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(env.MessageID)] {
			t.Fatalf("message id %x repeated", env.MessageID)
		}
		seen[string(env.MessageID)] = true
	}
}

// TestSealRefuses checks that a sender cannot seal what receivers reject.
func TestSealRefuses(t *testing.T) {
	key := wiretest.Key(wiretest.Device)
	upd, _ := wiretest.Good(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE)
	nanUpd := proto.Clone(upd).(*fedgepb.Update)
	nanUpd.Metrics.Accuracy = 2
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		signer crypto.Signer
		sender string
		typ    fedgepb.PayloadType
		msg    proto.Message
		want   error
	}{
		{"bad sender", key, "dev/1", fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, upd, wire.ErrBadField},
		{"empty sender", key, "", fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, upd, wire.ErrBadField},
		{"unknown type", key, wiretest.Device, 99, upd, wire.ErrUnknownType},
		{"type mismatch", key, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, upd, nil},
		{"nil message", key, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, nil, nil},
		{"invalid field", key, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, nanUpd, wire.ErrBadField},
		{"not ed25519", ecKey, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, upd, nil},
		{"nil signer", nil, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, upd, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := wire.Seal(tt.signer, tt.sender, tt.typ, tt.msg, now)
			if err == nil || raw != nil {
				t.Fatalf("Seal succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestOpenChecksSizeFirst: an oversize input is too_large even when it is
// not decodable at all, so nothing was decoded.
func TestOpenChecksSizeFirst(t *testing.T) {
	l := wire.Limits{MaxMessageBytes: 100}
	garbage := bytes.Repeat([]byte{0xff}, 101)
	if _, err := wire.Open(garbage, l); !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("oversize garbage: %v, want too_large", err)
	}
	if _, err := wire.Open(garbage[:100], l); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("garbage at the limit: %v, want malformed", err)
	}
}

// TestDefaultLimits: zero Limits fields take the defaults.
func TestDefaultLimits(t *testing.T) {
	d := wire.DefaultLimits()
	raw := wiretest.Find("oversize message").Raw
	if len(raw) > d.MaxMessageBytes {
		t.Fatalf("table's oversize message is above the default limit too")
	}
	if _, err := wire.Open(raw, wire.Limits{}); err != nil {
		t.Fatalf("zero limits should use defaults: %v", err)
	}
}

// TestSigningBytesGolden pins the canonical envelope signing bytes: changing
// the format breaks every deployed signature and needs a new protocol
// version.
func TestSigningBytesGolden(t *testing.T) {
	env := &wire.Envelope{
		Version: 1, Sender: "dev-1", MessageID: bytes.Repeat([]byte{0xaa}, 16),
		TimestampMS: 0x0102030405, Type: fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, Payload: []byte{1, 2, 3},
	}
	want := "" +
		"0000000000000011" + hex.EncodeToString([]byte("fedge/v1 envelope")) +
		"00000001" +
		"0000000000000005" + hex.EncodeToString([]byte("dev-1")) +
		"0000000000000010" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" +
		"0000000102030405" +
		"00000006" +
		"0000000000000003" + "010203"
	if got := hex.EncodeToString(env.SigningBytes()); got != want {
		t.Fatalf("signing bytes\n got %s\nwant %s", got, want)
	}
}

// TestSigningBytesCoverEveryField: changing any signed field invalidates the
// signature, and length prefixes keep adjacent fields from sliding.
func TestSigningBytesCoverEveryField(t *testing.T) {
	key := wiretest.Key(wiretest.Device)
	pub := wiretest.Public(wiretest.Device)
	base := func() *wire.Envelope {
		e := &wire.Envelope{Version: 1, Sender: "dev-1", MessageID: bytes.Repeat([]byte{7}, 16),
			TimestampMS: 99, Type: fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, Payload: []byte("abc")}
		if err := e.Sign(key); err != nil {
			t.Fatal(err)
		}
		return e
	}
	if err := wire.Verify(base(), pub); err != nil {
		t.Fatalf("base: %v", err)
	}
	muts := map[string]func(*wire.Envelope){
		"version":          func(e *wire.Envelope) { e.Version = 2 },
		"sender":           func(e *wire.Envelope) { e.Sender = "dev-2" },
		"message id":       func(e *wire.Envelope) { e.MessageID[0] ^= 1 },
		"timestamp":        func(e *wire.Envelope) { e.TimestampMS++ },
		"type":             func(e *wire.Envelope) { e.Type = fedgepb.PayloadType_PAYLOAD_TYPE_HELLO },
		"payload":          func(e *wire.Envelope) { e.Payload = []byte("abd") },
		"sender into id":   func(e *wire.Envelope) { e.Sender = "dev-"; e.MessageID = append([]byte("1"), e.MessageID...) },
		"payload extended": func(e *wire.Envelope) { e.Payload = append(e.Payload, 0) },
	}
	for name, mut := range muts {
		e := base()
		mut(e)
		if err := wire.Verify(e, pub); !errors.Is(err, wire.ErrBadSignature) {
			t.Errorf("%s changed: Verify = %v, want bad signature", name, err)
		}
	}
	if err := wire.Verify(base(), wiretest.Public(wiretest.OtherDevice)); !errors.Is(err, wire.ErrBadSignature) {
		t.Errorf("other key: %v", err)
	}
	if err := wire.Verify(base(), pub[:31]); !errors.Is(err, wire.ErrUnknownSender) {
		t.Errorf("short key: %v", err)
	}
}

// TestSignedFieldsComplete guards the signing-bytes functions against new
// proto fields: a field added to Envelope or ModelManifest must be added to
// SigningBytes / ManifestSigningBytes (and this count) deliberately.
func TestSignedFieldsComplete(t *testing.T) {
	if n := (&fedgepb.Envelope{}).ProtoReflect().Descriptor().Fields().Len(); n != 7 {
		t.Errorf("Envelope has %d fields; SigningBytes covers 6 + signature", n)
	}
	if n := (&fedgepb.ModelManifest{}).ProtoReflect().Descriptor().Fields().Len(); n != 10 {
		t.Errorf("ModelManifest has %d fields; ManifestSigningBytes covers 9 + signature", n)
	}
}

// TestDomainSeparation: an envelope signature never verifies as a manifest
// signature over the same key.
func TestDomainSeparation(t *testing.T) {
	m := wiretest.Manifest()
	env := &wire.Envelope{Payload: wire.ManifestSigningBytes(m)}
	if bytes.HasPrefix(env.SigningBytes(), wire.ManifestSigningBytes(m)[:25]) {
		t.Fatalf("envelope and manifest signing bytes share a prefix")
	}
	if !ed25519.Verify(wiretest.Public("coordinator"), wire.ManifestSigningBytes(m), m.Signature) {
		t.Fatalf("manifest signature does not verify over its signing bytes")
	}
	if ed25519.Verify(wiretest.Public("coordinator"), env.SigningBytes(), m.Signature) {
		t.Fatalf("manifest signature verifies as an envelope")
	}
}

func TestDecodePayloadEveryType(t *testing.T) {
	for _, typ := range wiretest.PayloadTypes() {
		msg, _ := wiretest.Good(typ)
		raw, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.DecodePayload(typ, raw, wire.Limits{})
		if err != nil {
			t.Fatalf("%v: %v", typ, err)
		}
		if !proto.Equal(got, msg) {
			t.Fatalf("%v: decoded %v", typ, got)
		}
		if err := wire.ValidatePayload(typ, msg, wire.Limits{}); err != nil {
			t.Fatalf("%v: ValidatePayload: %v", typ, err)
		}
	}
	if err := wire.ValidatePayload(fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, &fedgepb.Status{}, wire.Limits{}); !errors.Is(err, wire.ErrBadField) {
		t.Fatalf("mismatched ValidatePayload: %v", err)
	}
}
