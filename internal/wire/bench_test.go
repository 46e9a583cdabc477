package wire_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// benchUpdate returns a valid update with an inline delta of n bytes.
func benchUpdate(n int) *fedgepb.Update {
	msg, _ := wiretest.Good(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE)
	u := msg.(*fedgepb.Update)
	u.EncodedDelta = make([]byte, n)
	u.DeltaLength = uint64(n)
	return u
}

var benchSizes = []struct {
	name string
	n    int
}{{"delta=64B", 64}, {"delta=64KiB", 64 << 10}, {"delta=1MiB", 1 << 20}}

// BenchmarkAccept measures the full receive check (size check, decode,
// validation, topic binding, Ed25519 verification) against its baseline:
// the irreducible work of one proto.Unmarshal of the envelope and payload
// plus one ed25519.Verify, without any of wire's checks.
func BenchmarkAccept(b *testing.B) {
	key, pub := wiretest.Key(wiretest.Device), wiretest.Public(wiretest.Device)
	topic := topics.DeviceOut(wiretest.Fleet, wiretest.Device, topics.KindUpdate)
	keys := wiretest.Keys()
	limits := wire.Limits{MaxMessageBytes: 4 << 20}
	for _, sz := range benchSizes {
		raw, err := wire.Seal(key, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, benchUpdate(sz.n), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		env, err := wire.Open(raw, limits)
		if err != nil {
			b.Fatal(err)
		}
		signing := env.SigningBytes()
		b.Run(sz.name+"/baseline=unmarshal+verify", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				var pb fedgepb.Envelope
				var u fedgepb.Update
				if proto.Unmarshal(raw, &pb) != nil || proto.Unmarshal(pb.Payload, &u) != nil ||
					!ed25519.Verify(pub, signing, pb.Signature) {
					b.Fatal("baseline failed")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(sz.name+"/accept", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := wire.Accept(topic, raw, limits, keys); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkSeal measures Seal against its baseline: one deterministic
// proto.Marshal of the payload plus one ed25519.Sign.
func BenchmarkSeal(b *testing.B) {
	key := wiretest.Key(wiretest.Device)
	for _, sz := range benchSizes {
		u := benchUpdate(sz.n)
		b.Run(sz.name+"/baseline=marshal+sign", func(b *testing.B) {
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				p, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
				if err != nil {
					b.Fatal(err)
				}
				_ = ed25519.Sign(key, p)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(sz.name+"/seal", func(b *testing.B) {
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				if _, err := wire.Seal(key, wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
