package wire

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Payload types grouped by the topic kinds that carry them.
var (
	blobTypes = []fedgepb.PayloadType{
		fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_DESCRIPTOR,
		fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_CHUNK,
		fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST,
	}
	// outTypes: device -> coordinator, by kind of dev/{id}/out/{kind}.
	outTypes = map[string][]fedgepb.PayloadType{
		topics.KindStatus: {fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS},
		topics.KindUpdate: {fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT},
		topics.KindSecAgg: {fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG},
		topics.KindBlob:   blobTypes,
		topics.KindEnroll: {fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST},
	}
	// inTypes: coordinator -> device, by kind of dev/{id}/in/{kind}. nil
	// means any known type (control).
	inTypes = map[string][]fedgepb.PayloadType{
		topics.KindTask:    {fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK},
		topics.KindAck:     {fedgepb.PayloadType_PAYLOAD_TYPE_ACK},
		topics.KindSecAgg:  {fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG},
		topics.KindBlob:    blobTypes,
		topics.KindEnroll:  {fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE},
		topics.KindControl: nil,
	}
	// globalTypes: coordinator -> all, by kind of global/{kind}.
	globalTypes = map[string][]fedgepb.PayloadType{
		"manifest":      {fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST},
		"round":         {fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_ANNOUNCEMENT},
		topics.KindBlob: blobTypes,
	}
)

// CheckSender binds env to the topic it arrived on:
//
//   - on dev/{id}/out/... the sender must be the device {id}, and a device id
//     inside the payload (hello, status, update, evaluation result,
//     enrollment request) must be {id} too;
//   - on dev/{id}/in/... and global/... the sender must be the coordinator,
//     and an enrollment response must name the device {id};
//   - each topic kind carries only its payload types (e.g. out/update:
//     updates and evaluation results; global/manifest: manifests; in/control:
//     any type); unknown kinds carry nothing.
//
// Every error is a *RejectError (bad_topic, sender_mismatch or wrong_type).
func CheckSender(topic string, env *Envelope) error {
	err := checkSender(topic, env)
	if err != nil {
		return withContext(err, topic, env.Sender)
	}
	return nil
}

func checkSender(topic string, env *Envelope) error {
	p, err := topics.Parse(topic)
	if err != nil {
		return &RejectError{Reason: ReasonBadTopic, Err: err}
	}
	var allowed map[string][]fedgepb.PayloadType
	switch p.Direction {
	case "out":
		if env.Sender != p.Device {
			return Reject(ReasonSenderMismatch, "sender %q on the topic of device %q", env.Sender, p.Device)
		}
		if id, ok := payloadDeviceID(env); ok && id != p.Device {
			return Reject(ReasonSenderMismatch, "payload names device %q on the topic of device %q", id, p.Device)
		}
		allowed = outTypes
	case "in", "global":
		if env.Sender != CoordinatorID {
			return Reject(ReasonSenderMismatch, "sender %q on a coordinator topic", env.Sender)
		}
		if r, ok := env.Msg.(*fedgepb.EnrollResponse); ok && r.DeviceId != p.Device {
			return Reject(ReasonSenderMismatch, "enroll response for %q on the topic of device %q", r.DeviceId, p.Device)
		}
		allowed = inTypes
		if p.Direction == "global" {
			allowed = globalTypes
		}
	default:
		return Reject(ReasonBadTopic, "direction %q", p.Direction)
	}
	types, ok := allowed[p.Kind]
	if !ok {
		return Reject(ReasonWrongType, "no payload types allowed on %s kind %q", p.Direction, p.Kind)
	}
	if types == nil {
		return nil
	}
	for _, t := range types {
		if t == env.Type {
			return nil
		}
	}
	return Reject(ReasonWrongType, "%v not allowed on %s kind %q", env.Type, p.Direction, p.Kind)
}

// payloadDeviceID returns the device id a device-sent payload names.
func payloadDeviceID(env *Envelope) (string, bool) {
	switch m := env.Msg.(type) {
	case *fedgepb.Hello:
		return m.DeviceId, true
	case *fedgepb.Status:
		return m.DeviceId, true
	case *fedgepb.Update:
		return m.DeviceId, true
	case *fedgepb.EvaluateResult:
		return m.DeviceId, true
	case *fedgepb.EnrollRequest:
		return m.DeviceId, true
	}
	return "", false
}

// KeyFunc returns the public key that must have signed env (looked up by
// env.Sender, or for enrollment by the payload). It returns an error
// wrapping ErrUnknownSender when there is none.
type KeyFunc func(env *Envelope) (ed25519.PublicKey, error)

// StaticKeys is a KeyFunc over a fixed map from sender id to public key.
// The map must not be modified afterwards.
func StaticKeys(keys map[string]ed25519.PublicKey) KeyFunc {
	return func(env *Envelope) (ed25519.PublicKey, error) {
		k, ok := keys[env.Sender]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownSender, env.Sender)
		}
		return k, nil
	}
}

// WithEnrollment wraps next so that an enrollment request is verified with
// the public key it carries (proof of possession: the sender holds the key it
// asks to register). Whether to register it is the coordinator's decision.
func WithEnrollment(next KeyFunc) KeyFunc {
	return func(env *Envelope) (ed25519.PublicKey, error) {
		if r, ok := env.Msg.(*fedgepb.EnrollRequest); ok {
			return ed25519.PublicKey(r.PublicKey), nil
		}
		return next(env)
	}
}

// Accept runs the full receive check on one raw message from topic: Open
// with limits, CheckSender, signature Verify with the key from keys and, for
// a model manifest, VerifyManifest with the same (coordinator) key. It does
// not de-duplicate (see Serve). Every error is a *RejectError carrying topic
// and, once known, sender.
func Accept(topic string, raw []byte, limits Limits, keys KeyFunc) (*Envelope, error) {
	env, err := Open(raw, limits)
	if err != nil {
		return nil, withContext(err, topic, "")
	}
	if err := CheckSender(topic, env); err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, &RejectError{Reason: ReasonUnknownSender, Topic: topic, Sender: env.Sender, Err: errors.New("no key lookup configured")}
	}
	pub, err := keys(env)
	if err != nil {
		if ReasonOf(err) == ReasonNone {
			err = &RejectError{Reason: ReasonUnknownSender, Err: err}
		}
		return nil, withContext(err, topic, env.Sender)
	}
	if err := Verify(env, pub); err != nil {
		return nil, withContext(err, topic, env.Sender)
	}
	if m, ok := env.Msg.(*fedgepb.ModelManifest); ok {
		if err := VerifyManifest(m, pub); err != nil {
			return nil, withContext(err, topic, env.Sender)
		}
	}
	return env, nil
}
