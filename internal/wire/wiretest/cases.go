// Package wiretest holds one shared table of good and bad raw wire messages
// (Cases) and signed model manifests (Manifests), with the deterministic keys
// that signed them. Decoder tests, fuzz seeds and the coordinator and agent
// tests all use the same table, so a new bad input added here is checked
// everywhere. Everything is deterministic: the same bytes on every run.
package wiretest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Case is one raw message as it arrives on Topic, and what wire.Accept with
// Limits() and Keys() must make of it: Reason is wire.ReasonNone for a good
// message, else the rejection reason.
type Case struct {
	Name   string
	Topic  string
	Raw    []byte
	Reason wire.Reason
}

// Cases returns the table of good and bad messages: one good message per
// payload type, then the bad ones. The slices are fresh on every call, so
// callers may modify them.
func Cases() []Case {
	var cs []Case
	for _, t := range PayloadTypes() {
		msg, topic := Good(t)
		cs = append(cs, Case{Name: "good " + t.String(), Topic: topic, Raw: sealGood(t, msg), Reason: wire.ReasonNone})
	}
	return append(cs, badCases()...)
}

// Find returns the case called name (e.g. "good PAYLOAD_TYPE_UPDATE") and
// panics if there is none.
func Find(name string) Case {
	for _, c := range Cases() {
		if c.Name == name {
			return c
		}
	}
	panic("wiretest: no case " + name)
}

// envelope returns an unsigned version-1 envelope from sender with the
// marshalled msg as payload and a message id derived from label.
func envelope(label, sender string, typ fedgepb.PayloadType, msg proto.Message) *wire.Envelope {
	return &wire.Envelope{
		Version: wire.ProtocolVersion, Sender: sender, MessageID: messageID(label),
		TimestampMS: Timestamp, Type: typ, Payload: marshal(msg),
	}
}

func marshal(msg proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		panic("wiretest: " + err.Error())
	}
	return b
}

// signed signs e with key and marshals it.
func signed(e *wire.Envelope, key ed25519.PrivateKey) []byte {
	if err := e.Sign(key); err != nil {
		panic("wiretest: " + err.Error())
	}
	b, err := e.Marshal()
	if err != nil {
		panic("wiretest: " + err.Error())
	}
	return b
}

func sealGood(t fedgepb.PayloadType, msg proto.Message) []byte {
	s := senderOf(t)
	return signed(envelope(t.String(), s, t, msg), Key(s))
}

// devUpdate returns a good update modified by f, sealed by Device on its
// update topic.
func devUpdate(name string, f func(*fedgepb.Update)) []byte {
	msg, _ := Good(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE)
	u := msg.(*fedgepb.Update)
	f(u)
	return signed(envelope(name, Device, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u), Key(Device))
}

// modified returns the good message of type t modified by f, sealed by its
// usual sender.
func modified[T proto.Message](name string, t fedgepb.PayloadType, f func(T)) ([]byte, string) {
	msg, topic := Good(t)
	f(msg.(T))
	s := senderOf(t)
	return signed(envelope(name, s, t, msg), Key(s)), topic
}

func badCases() []Case {
	var cs []Case
	add := func(name, topic string, raw []byte, r wire.Reason) {
		cs = append(cs, Case{Name: name, Topic: topic, Raw: raw, Reason: r})
	}
	upd := fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE
	updTopic := topics.DeviceOut(Fleet, Device, topics.KindUpdate)
	goodUpd := devUpdate("update", func(*fedgepb.Update) {})

	// Not an envelope at all.
	add("empty", updTopic, nil, wire.ReasonMalformed)
	add("garbage", updTopic, []byte{0xff, 0xff, 0xff, 0xff}, wire.ReasonMalformed)
	add("truncated", updTopic, goodUpd[:len(goodUpd)-7], wire.ReasonMalformed)
	add("varint overflow", updTopic, []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, wire.ReasonMalformed)
	add("unknown envelope field", updTopic, protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), goodUpd...), 15, protowire.VarintType), 1), wire.ReasonMalformed)
	add("invalid utf8 sender", updTopic, protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), goodUpd...), 2, protowire.BytesType), []byte("dev-\xff")), wire.ReasonMalformed)

	// Protocol version.
	var e *wire.Envelope
	for _, v := range []uint32{0, 2, math.MaxUint32} {
		e = envelope("version", Device, upd, nil)
		e.Payload = payloadOf(goodUpd)
		e.Version = v
		add("unknown version "+itoa(uint64(v)), updTopic, signed(e, Key(Device)), wire.ReasonUnknownVersion)
	}

	// Size limits.
	big := &fedgepb.SecAggMessage{RoundId: 7, Stage: 1, Body: make([]byte, Limits().MaxMessageBytes)}
	add("oversize message", topics.DeviceOut(Fleet, Device, topics.KindSecAgg),
		signed(envelope("big", Device, fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG, big), Key(Device)), wire.ReasonTooLarge)
	r, topic := modified("big chunk", fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_CHUNK, func(c *fedgepb.BlobChunk) {
		c.Data = make([]byte, Limits().MaxChunkBytes+1)
		c.ChunkHash = sha256Of(c.Data)
	})
	add("oversize chunk", topic, r, wire.ReasonTooLarge)
	r, topic = modified("many indices", fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST, func(q *fedgepb.BlobRequest) {
		q.Indices = make([]uint32, Limits().MaxRepeated+1)
	})
	add("too many repeated", topic, r, wire.ReasonTooLarge)
	r, topic = modified("long version", fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, func(h *fedgepb.Hello) {
		h.AgentVersion = string(make([]byte, Limits().MaxStringBytes+1))
	})
	add("oversize string", topic, r, wire.ReasonTooLarge)

	// Payload type.
	for _, t := range []fedgepb.PayloadType{0, 99} {
		e = envelope("type", Device, t, nil)
		e.Payload = payloadOf(goodUpd)
		add("unknown payload type "+itoa(uint64(t)), updTopic, signed(e, Key(Device)), wire.ReasonUnknownType)
	}
	st, _ := Good(fedgepb.PayloadType_PAYLOAD_TYPE_STATUS)
	add("status on update topic", updTopic,
		signed(envelope("status", Device, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, st), Key(Device)), wire.ReasonWrongType)
	add("unknown topic kind", topics.DeviceOut(Fleet, Device, "whatever"), goodUpd, wire.ReasonWrongType)
	e = envelope("mislabelled", Device, fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, nil)
	e.Payload = payloadOf(goodUpd)
	add("update labelled hello", topics.DeviceOut(Fleet, Device, topics.KindStatus), signed(e, Key(Device)), wire.ReasonMalformed)
	e = envelope("mislabelled ack", wire.CoordinatorID, fedgepb.PayloadType_PAYLOAD_TYPE_ACK, nil)
	e.Payload = payloadOf(goodUpd)
	add("update labelled ack", topics.DeviceIn(Fleet, Device, topics.KindAck), signed(e, Key(wire.CoordinatorID)), wire.ReasonBadField)

	// Retry-later acks: they name no round or message and accept nothing.
	ack := fedgepb.PayloadType_PAYLOAD_TYPE_ACK
	r, t := modified("retry later", ack, func(m *fedgepb.Ack) {
		m.RoundId, m.MessageId, m.Accepted, m.Reason, m.RetryAfterMs = 0, nil, false, "busy", 2500
	})
	add("accepted retry-later ack", t, r, wire.ReasonNone)
	r, t = modified("retry later round", ack, func(m *fedgepb.Ack) { m.Accepted, m.Reason, m.RetryAfterMs = false, "busy", 2500 })
	add("retry-later ack naming a message", t, r, wire.ReasonBadField)
	r, t = modified("retry later long", ack, func(m *fedgepb.Ack) {
		m.RoundId, m.MessageId, m.Accepted, m.RetryAfterMs = 0, nil, false, wire.MaxRetryAfterMs+1
	})
	add("retry-later ack over the bound", t, r, wire.ReasonBadField)

	// Topic and sender binding.
	add("not a fedge topic", "some/other/topic", goodUpd, wire.ReasonBadTopic)
	add("sender mismatch", topics.DeviceOut(Fleet, OtherDevice, topics.KindUpdate), goodUpd, wire.ReasonSenderMismatch)
	add("payload device mismatch", updTopic, devUpdate("other dev", func(u *fedgepb.Update) { u.DeviceId = OtherDevice }), wire.ReasonSenderMismatch)
	mf, _ := Good(fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST)
	add("device publishes manifest", topics.Manifest(Fleet),
		signed(envelope("forged manifest", Device, fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, mf), Key(Device)), wire.ReasonSenderMismatch)
	tk, _ := Good(fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK)
	add("device sends task to device", topics.DeviceIn(Fleet, OtherDevice, topics.KindTask),
		signed(envelope("forged task", Device, fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, tk), Key(Device)), wire.ReasonSenderMismatch)
	add("coordinator sender on device topic", updTopic,
		signed(envelope("coord update", wire.CoordinatorID, upd, mustGood(upd)), Key(wire.CoordinatorID)), wire.ReasonSenderMismatch)
	r, _ = modified("enroll other", fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE, func(m *fedgepb.EnrollResponse) { m.DeviceId = OtherDevice })
	add("enroll response for other device", topics.DeviceIn(Fleet, Device, topics.KindEnroll), r, wire.ReasonSenderMismatch)

	// Keys and signatures.
	add("unknown sender", topics.DeviceOut(Fleet, Unknown, topics.KindUpdate),
		signed(envelope("unknown", Unknown, upd, withDevice(Unknown)), Key(Unknown)), wire.ReasonUnknownSender)
	add("flipped signature bit", updTopic, flipLast(goodUpd), wire.ReasonBadSignature)
	add("signed by other device key", updTopic, signed(envelope("wrong key", Device, upd, mustGood(upd)), Key(OtherDevice)), wire.ReasonBadSignature)
	e = envelope("tampered", Device, upd, mustGood(upd))
	signed(e, Key(Device))
	e.Payload = payloadOf(devUpdate("tampered", func(u *fedgepb.Update) { u.SampleCount = 60000 }))
	add("payload changed after signing", updTopic, mustMarshalEnv(e), wire.ReasonBadSignature)
	e = envelope("short sig", Device, upd, mustGood(upd))
	e.Signature = make([]byte, 10)
	add("short signature", updTopic, mustMarshalEnv(e), wire.ReasonBadSignature)
	e = envelope("no sig", Device, upd, mustGood(upd))
	add("missing signature", updTopic, mustMarshalEnv(e), wire.ReasonBadSignature)
	r, _ = modified("bad manifest sig", fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, func(m *fedgepb.ModelManifest) { m.Version = 4 })
	add("manifest signature stale", topics.Manifest(Fleet), r, wire.ReasonBadSignature)
	er, _ := Good(fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST)
	add("enroll request signed by other key", topics.DeviceOut(Fleet, NewDevice, topics.KindEnroll),
		signed(envelope("enroll wrong key", NewDevice, fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST, er), Key(Device)), wire.ReasonBadSignature)

	// Envelope fields.
	e = envelope("short id", Device, upd, mustGood(upd))
	e.MessageID = e.MessageID[:8]
	add("short message id", updTopic, signed(e, Key(Device)), wire.ReasonBadField)
	e = envelope("bad sender", "dev/1", upd, mustGood(upd))
	add("sender with slash", updTopic, signed(e, Key(Device)), wire.ReasonBadField)
	e = envelope("negative time", Device, upd, mustGood(upd))
	e.TimestampMS = -1
	add("negative timestamp", updTopic, signed(e, Key(Device)), wire.ReasonBadField)

	// Payload fields.
	for _, b := range []struct {
		name string
		f    func(*fedgepb.Update)
	}{
		{"round id zero", func(u *fedgepb.Update) { u.RoundId = 0 }},
		{"short base hash", func(u *fedgepb.Update) { u.BaseModelHash = u.BaseModelHash[:31] }},
		{"zero samples", func(u *fedgepb.Update) { u.SampleCount = 0 }},
		{"too many samples", func(u *fedgepb.Update) { u.SampleCount = Limits().MaxSampleCount + 1 }},
		{"NaN loss", func(u *fedgepb.Update) { u.Metrics.Loss = math.NaN() }},
		{"Inf loss", func(u *fedgepb.Update) { u.Metrics.Loss = math.Inf(1) }},
		{"accuracy above one", func(u *fedgepb.Update) { u.Metrics.Accuracy = 1.5 }},
		{"unspecified codec", func(u *fedgepb.Update) { u.Codec = 0 }},
		{"inline and blob delta", func(u *fedgepb.Update) { u.DeltaBlobId = Hash("delta") }},
		{"delta length mismatch", func(u *fedgepb.Update) { u.DeltaLength = 65 }},
		{"short nonce", func(u *fedgepb.Update) { u.Nonce = u.Nonce[:4] }},
	} {
		add("update "+b.name, updTopic, devUpdate(b.name, b.f), wire.ReasonBadField)
	}
	r, topic = modified("nan lr", fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, func(t *fedgepb.RoundTask) {
		t.Train.LearningRate = float32(math.NaN())
	})
	add("task NaN learning rate", topic, r, wire.ReasonBadField)
	r, topic = modified("no train", fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, func(t *fedgepb.RoundTask) { t.Train = nil })
	add("train task without config", topic, r, wire.ReasonBadField)
	r, topic = modified("secagg threshold", fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, func(t *fedgepb.RoundTask) { t.Secagg.Threshold = 4 })
	add("secagg threshold above participants", topic, r, wire.ReasonBadField)
	r, topic = modified("eval inf", fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT, func(m *fedgepb.EvaluateResult) { m.Accuracy = math.Inf(-1) })
	add("evaluate Inf accuracy", topic, r, wire.ReasonBadField)
	r, topic = modified("status unspecified", fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, func(m *fedgepb.Status) { m.State = 42 })
	add("status unknown state", topic, r, wire.ReasonBadField)
	r, topic = modified("status dropped", fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, func(m *fedgepb.Status) {
		m.State, m.RoundId = fedgepb.DeviceState_DEVICE_STATE_DROPPED, 0
	})
	add("status dropped without round", topic, r, wire.ReasonBadField)
	r, topic = modified("status reason", fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, func(m *fedgepb.Status) {
		m.State, m.Reason = fedgepb.DeviceState_DEVICE_STATE_DROPPED, strings.Repeat("x", 1000)
	})
	add("status reason too long", topic, r, wire.ReasonTooLarge)
	r, topic = modified("desc count", fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_DESCRIPTOR, func(m *fedgepb.BlobDescriptor) { m.ChunkHashes = m.ChunkHashes[:2] })
	add("descriptor chunk count", topic, r, wire.ReasonBadField)
	r, topic = modified("manifest params", fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, func(m *fedgepb.ModelManifest) {
		m.ParamCount++
		if err := wire.SignManifest(m, Key(wire.CoordinatorID)); err == nil {
			panic("wiretest: SignManifest accepted a bad manifest")
		}
	})
	add("manifest weights length mismatch", topic, r, wire.ReasonBadField)
	r, topic = modified("enroll key", fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST, func(m *fedgepb.EnrollRequest) { m.PublicKey = m.PublicKey[:31] })
	add("enroll short public key", topic, r, wire.ReasonBadField)

	// Content hashes.
	r, topic = modified("chunk hash", fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_CHUNK, func(c *fedgepb.BlobChunk) { c.Data = []byte("other data") })
	add("chunk hash mismatch", topic, r, wire.ReasonHashMismatch)
	return cs
}

// payloadOf returns the payload field of a marshalled envelope.
func payloadOf(raw []byte) []byte {
	var pb fedgepb.Envelope
	if err := proto.Unmarshal(raw, &pb); err != nil {
		panic("wiretest: " + err.Error())
	}
	return pb.Payload
}

func mustMarshalEnv(e *wire.Envelope) []byte {
	b, err := e.Marshal()
	if err != nil {
		panic("wiretest: " + err.Error())
	}
	return b
}

func mustGood(t fedgepb.PayloadType) proto.Message {
	m, _ := Good(t)
	return m
}

// withDevice returns the good update naming device id.
func withDevice(id string) *fedgepb.Update {
	u := mustGood(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE).(*fedgepb.Update)
	u.DeviceId = id
	return u
}

// flipLast returns a copy of raw with the lowest bit of its last byte (the
// end of the signature) flipped.
func flipLast(raw []byte) []byte {
	b := append([]byte(nil), raw...)
	b[len(b)-1] ^= 1
	return b
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
