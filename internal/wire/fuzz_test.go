package wire_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// checkReject fails unless err is nil or a *RejectError with a known reason.
func checkReject(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var re *wire.RejectError
	if !errors.As(err, &re) {
		t.Fatalf("error %T is not a *RejectError: %v", err, err)
	}
	for _, r := range wire.Reasons() {
		if r == re.Reason {
			return
		}
	}
	t.Fatalf("unknown reason %q: %v", re.Reason, err)
}

// FuzzOpen runs arbitrary bytes on arbitrary topics through the whole receive
// check (Open, CheckSender, Verify, manifest verification). It must never
// panic, must reject with a known reason, and whatever it accepts must be
// internally consistent: it re-encodes to a message that is accepted again.
func FuzzOpen(f *testing.F) {
	for _, c := range wiretest.Cases() {
		f.Add(c.Topic, c.Raw)
	}
	keys, limits := wiretest.Keys(), wiretest.Limits()
	f.Fuzz(func(t *testing.T, topic string, raw []byte) {
		env, err := wire.Accept(topic, raw, limits, keys)
		checkReject(t, err)
		if err != nil {
			if env != nil {
				t.Fatalf("rejected with an envelope")
			}
			return
		}
		if env.Version != wire.ProtocolVersion || len(env.MessageID) != wire.MessageIDSize || env.Msg == nil {
			t.Fatalf("accepted inconsistent envelope %+v", env)
		}
		if err := wire.ValidatePayload(env.Type, env.Msg, limits); err != nil {
			t.Fatalf("accepted payload fails validation: %v", err)
		}
		again, err := env.Marshal()
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		env2, err := wire.Accept(topic, again, limits, keys)
		if err != nil {
			t.Fatalf("re-encoded accepted message rejected: %v", err)
		}
		if !env2.Equal(env) {
			t.Fatalf("re-encoded envelope differs")
		}
	})
}

// FuzzDecodePayload decodes arbitrary bytes as every payload type. Accepted
// payloads must validate and survive a marshal round trip.
func FuzzDecodePayload(f *testing.F) {
	for _, c := range wiretest.Cases() {
		var pb fedgepb.Envelope
		if proto.Unmarshal(c.Raw, &pb) == nil {
			f.Add(int32(pb.PayloadType), pb.Payload)
		}
	}
	limits := wiretest.Limits()
	f.Fuzz(func(t *testing.T, typ int32, payload []byte) {
		msg, err := wire.DecodePayload(fedgepb.PayloadType(typ), payload, limits)
		checkReject(t, err)
		if err != nil {
			return
		}
		if err := wire.ValidatePayload(fedgepb.PayloadType(typ), msg, limits); err != nil {
			t.Fatalf("decoded payload fails validation: %v", err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		msg2, err := wire.DecodePayload(fedgepb.PayloadType(typ), b, limits)
		if err != nil || !proto.Equal(msg, msg2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzVerifyManifest decodes arbitrary bytes as a standalone manifest and
// verifies it with the coordinator's key. It must never panic; a manifest it
// accepts must have exactly the signing bytes of a manifest the coordinator
// signed (the table's good ones), since nobody else holds the key.
func FuzzVerifyManifest(f *testing.F) {
	signed := map[string]bool{}
	for _, c := range wiretest.Manifests() {
		f.Add(c.Raw)
		if c.Reason == wire.ReasonNone {
			var m fedgepb.ModelManifest
			if err := proto.Unmarshal(c.Raw, &m); err != nil {
				f.Fatal(err)
			}
			signed[string(wire.ManifestSigningBytes(&m))] = true
		}
	}
	pub := wiretest.Public(wire.CoordinatorID)
	limits := wiretest.Limits()
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := wire.DecodeManifest(raw, pub, limits)
		checkReject(t, err)
		if err != nil {
			return
		}
		sb := wire.ManifestSigningBytes(m)
		if !signed[string(sb)] {
			t.Fatalf("accepted a manifest the coordinator never signed: %v", m)
		}
		if err := wire.ValidateManifest(m, limits); err != nil {
			t.Fatalf("accepted manifest fails validation: %v", err)
		}
	})
}
