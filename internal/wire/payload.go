package wire

import (
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Nonce length bounds for round tasks, updates and evaluation results.
const (
	MinNonceSize = 16
	MaxNonceSize = 64
)

// payloadSpec is how one payload type is decoded and validated.
type payloadSpec struct {
	new      func() proto.Message
	validate func(proto.Message, Limits) error
}

// spec adapts a typed validator.
func spec[T proto.Message](newT func() T, v func(T, Limits) error) payloadSpec {
	return payloadSpec{
		new:      func() proto.Message { return newT() },
		validate: func(m proto.Message, l Limits) error { return v(m.(T), l) },
	}
}

var payloadSpecs = map[fedgepb.PayloadType]payloadSpec{
	fedgepb.PayloadType_PAYLOAD_TYPE_HELLO:              spec(func() *fedgepb.Hello { return new(fedgepb.Hello) }, validateHello),
	fedgepb.PayloadType_PAYLOAD_TYPE_STATUS:             spec(func() *fedgepb.Status { return new(fedgepb.Status) }, validateStatus),
	fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK:         spec(func() *fedgepb.RoundTask { return new(fedgepb.RoundTask) }, validateRoundTask),
	fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_ANNOUNCEMENT: spec(func() *fedgepb.RoundAnnouncement { return new(fedgepb.RoundAnnouncement) }, validateAnnouncement),
	fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST:     spec(func() *fedgepb.ModelManifest { return new(fedgepb.ModelManifest) }, ValidateManifest),
	fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE:             spec(func() *fedgepb.Update { return new(fedgepb.Update) }, validateUpdate),
	fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT:    spec(func() *fedgepb.EvaluateResult { return new(fedgepb.EvaluateResult) }, validateEvaluateResult),
	fedgepb.PayloadType_PAYLOAD_TYPE_ACK:                spec(func() *fedgepb.Ack { return new(fedgepb.Ack) }, validateAck),
	fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_DESCRIPTOR:    spec(func() *fedgepb.BlobDescriptor { return new(fedgepb.BlobDescriptor) }, validateBlobDescriptor),
	fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_CHUNK:         spec(func() *fedgepb.BlobChunk { return new(fedgepb.BlobChunk) }, validateBlobChunk),
	fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST:       spec(func() *fedgepb.BlobRequest { return new(fedgepb.BlobRequest) }, validateBlobRequest),
	fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST:     spec(func() *fedgepb.EnrollRequest { return new(fedgepb.EnrollRequest) }, validateEnrollRequest),
	fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE:    spec(func() *fedgepb.EnrollResponse { return new(fedgepb.EnrollResponse) }, validateEnrollResponse),
	fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG:             spec(func() *fedgepb.SecAggMessage { return new(fedgepb.SecAggMessage) }, validateSecAgg),
}

// DecodePayload decodes payload as the message type named by typ and
// validates its fields against limits. The result is a pointer to that
// fedgepb type (e.g. *fedgepb.Update for PAYLOAD_TYPE_UPDATE). Every error
// is a *RejectError.
func DecodePayload(typ fedgepb.PayloadType, payload []byte, limits Limits) (proto.Message, error) {
	limits = limits.withDefaults()
	spec, ok := payloadSpecs[typ]
	if !ok {
		return nil, Reject(ReasonUnknownType, "payload type %d", int32(typ))
	}
	if len(payload) > limits.MaxMessageBytes {
		return nil, Reject(ReasonTooLarge, "%v payload of %d bytes, limit %d", typ, len(payload), limits.MaxMessageBytes)
	}
	msg := spec.new()
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(payload, msg); err != nil {
		return nil, Reject(ReasonMalformed, "%v payload: %w", typ, err)
	}
	if err := spec.validate(msg, limits); err != nil {
		if ReasonOf(err) == ReasonNone {
			err = &RejectError{Reason: ReasonBadField, Err: err}
		}
		return nil, err
	}
	return msg, nil
}

// ValidatePayload validates the fields of an already decoded payload of type
// typ against limits (what DecodePayload does after unmarshalling).
func ValidatePayload(typ fedgepb.PayloadType, msg proto.Message, limits Limits) error {
	spec, ok := payloadSpecs[typ]
	if !ok {
		return Reject(ReasonUnknownType, "payload type %d", int32(typ))
	}
	if msg == nil || msg.ProtoReflect().Descriptor() != spec.new().ProtoReflect().Descriptor() {
		return Reject(ReasonBadField, "%v payload is %T", typ, msg)
	}
	return spec.validate(msg, limits.withDefaults())
}

// bad returns a bad_field rejection.
func bad(format string, args ...any) error { return Reject(ReasonBadField, format, args...) }

func checkID(field, id string) error {
	if err := topics.ValidateID(id); err != nil {
		return bad("%s: %w", field, err)
	}
	return nil
}

func checkHash(field string, h []byte) error {
	if len(h) != HashSize {
		return bad("%s has %d bytes, want %d", field, len(h), HashSize)
	}
	return nil
}

func checkOptionalHash(field string, h []byte) error {
	if len(h) == 0 {
		return nil
	}
	return checkHash(field, h)
}

func checkString(field, s string, l Limits) error {
	if len(s) > l.MaxStringBytes {
		return Reject(ReasonTooLarge, "%s has %d bytes, limit %d", field, len(s), l.MaxStringBytes)
	}
	return nil
}

func checkCount(field string, n int, l Limits) error {
	if n > l.MaxRepeated {
		return Reject(ReasonTooLarge, "%s has %d elements, limit %d", field, n, l.MaxRepeated)
	}
	return nil
}

func checkRound(id uint64) error {
	if id == 0 {
		return bad("round id is 0")
	}
	return nil
}

func checkNonce(n []byte) error {
	if len(n) < MinNonceSize || len(n) > MaxNonceSize {
		return bad("nonce has %d bytes, want %d to %d", len(n), MinNonceSize, MaxNonceSize)
	}
	return nil
}

func checkSamples(n uint64, l Limits) error {
	if n == 0 || n > l.MaxSampleCount {
		return bad("sample count %d outside 1..%d", n, l.MaxSampleCount)
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkFloat requires a finite value in [lo, hi].
func checkFloat(field string, x, lo, hi float64) error {
	if !finite(x) || x < lo || x > hi {
		return bad("%s = %v outside [%v, %v]", field, x, lo, hi)
	}
	return nil
}

func checkEnum[E ~int32](field string, v E, names map[int32]string) error {
	if v == 0 {
		return bad("%s unspecified", field)
	}
	if _, ok := names[int32(v)]; !ok {
		return bad("%s has unknown value %d", field, int32(v))
	}
	return nil
}
