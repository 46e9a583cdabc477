// Package wire is fedge's message codec and the first line of its trust
// boundary. Every message on the wire is a fedgepb.Envelope carrying a
// protocol version, a sender id, a random message id, a timestamp, a typed
// payload and an Ed25519 signature.
//
// Sending: Seal validates and marshals a payload, wraps it in an envelope and
// signs the envelope's canonical signing bytes (a domain-separated,
// length-prefixed concatenation of all fields but the signature; never a
// re-marshalled protobuf, whose encoding is not canonical).
//
// Receiving, in this order (Accept does all four, Serve adds QoS 1
// de-duplication and a handler that cannot take the loop down):
//
//  1. Open checks the raw size against Limits before decoding anything,
//     decodes the envelope, checks version, sender syntax and message id,
//     decodes the payload as the announced type and validates its fields.
//  2. CheckSender binds the envelope to its topic: a device publishes only as
//     itself, only the coordinator publishes global and dev/{id}/in topics,
//     and each topic kind carries only its payload types.
//  3. Verify checks the signature with the sender's key.
//  4. For model manifests, VerifyManifest checks the manifest's own signature.
//
// Every rejection is a *RejectError with a Reason, counted in Counters.
//
// Envelopes with unknown fields are rejected: the signature covers only the
// fields listed above, so an unknown envelope field could not be
// authenticated. Extending the envelope therefore takes a new protocol
// version. Unknown fields inside a payload are allowed (they are signed).
package wire

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// ProtocolVersion is the only envelope protocol version this build speaks.
const ProtocolVersion = 1

// CoordinatorID is the sender id of the coordinator.
const CoordinatorID = "coordinator"

// MessageIDSize is the length of an envelope's message id.
const MessageIDSize = 16

// HashSize is the length of every content hash on the wire (SHA-256).
const HashSize = 32

// Domain separation prefixes of the signing bytes.
const (
	envelopeDomain = "fedge/v1 envelope"
	manifestDomain = "fedge/v1 manifest"
)

// Limits bounds what a receiver accepts. The zero value of a field means
// "use the default" (see DefaultLimits).
type Limits struct {
	// MaxMessageBytes bounds the raw envelope, checked before decoding.
	MaxMessageBytes int
	// MaxChunkBytes bounds a blob chunk's data and a descriptor's chunk size.
	MaxChunkBytes int
	// MaxBlobBytes bounds a blob's, model's or encoded delta's total length.
	MaxBlobBytes uint64
	// MaxRepeated bounds every repeated or map field (chunk hashes, indices,
	// participants, tags...).
	MaxRepeated int
	// MaxSampleCount bounds the sample counts a device may claim.
	MaxSampleCount uint64
	// MaxStringBytes bounds free-form strings (versions, reasons, tokens).
	MaxStringBytes int
}

// DefaultLimits returns the limits used for zero fields: 4 MiB messages,
// 1 MiB chunks, 1 GiB blobs, 65536 repeated elements, 2^32 samples and
// 256-byte strings.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes: 4 << 20,
		MaxChunkBytes:   1 << 20,
		MaxBlobBytes:    1 << 30,
		MaxRepeated:     1 << 16,
		MaxSampleCount:  1 << 32,
		MaxStringBytes:  256,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.MaxChunkBytes <= 0 {
		l.MaxChunkBytes = d.MaxChunkBytes
	}
	if l.MaxBlobBytes == 0 {
		l.MaxBlobBytes = d.MaxBlobBytes
	}
	if l.MaxRepeated <= 0 {
		l.MaxRepeated = d.MaxRepeated
	}
	if l.MaxSampleCount == 0 {
		l.MaxSampleCount = d.MaxSampleCount
	}
	if l.MaxStringBytes <= 0 {
		l.MaxStringBytes = d.MaxStringBytes
	}
	return l
}

// sealLimits are the limits Seal validates against: only structural checks,
// since the receiver's size limits are not known to the sender.
var sealLimits = Limits{
	MaxMessageBytes: 1<<31 - 1,
	MaxChunkBytes:   1<<31 - 1,
	MaxBlobBytes:    1<<64 - 1,
	MaxRepeated:     1<<31 - 1,
	MaxSampleCount:  1<<64 - 1,
	MaxStringBytes:  1<<31 - 1,
}

// Envelope is a decoded envelope. Open fills every field; Seal builds one.
// Tools that craft envelopes (tests, wiretest) may fill the fields directly,
// then call Sign and Marshal.
type Envelope struct {
	Version     uint32
	Sender      string
	MessageID   []byte
	TimestampMS int64 // sender's clock, Unix milliseconds; informational
	Type        fedgepb.PayloadType
	Payload     []byte // the payload exactly as signed
	Signature   []byte
	// Msg is the decoded, validated payload (set by Open; a pointer to the
	// fedgepb message type named by Type).
	Msg proto.Message
}

// Time returns the sender's timestamp.
func (e *Envelope) Time() time.Time { return time.UnixMilli(e.TimestampMS) }

// SigningBytes returns the canonical bytes the signature covers:
//
//	lp("fedge/v1 envelope") || u32(version) || lp(sender) || lp(message id) ||
//	i64(timestamp ms) || u32(payload type) || lp(payload)
//
// where integers are big-endian and lp(x) is u64(len(x)) || x.
func (e *Envelope) SigningBytes() []byte {
	b := make([]byte, 0, 8+len(envelopeDomain)+4+8+len(e.Sender)+8+len(e.MessageID)+8+4+8+len(e.Payload))
	b = appendLP(b, []byte(envelopeDomain))
	b = binary.BigEndian.AppendUint32(b, e.Version)
	b = appendLP(b, []byte(e.Sender))
	b = appendLP(b, e.MessageID)
	b = binary.BigEndian.AppendUint64(b, uint64(e.TimestampMS))
	b = binary.BigEndian.AppendUint32(b, uint32(e.Type))
	b = appendLP(b, e.Payload)
	return b
}

func appendLP(b, x []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(x)))
	return append(b, x...)
}

// Sign sets e.Signature to signer's Ed25519 signature of e.SigningBytes().
// signer is an ed25519.PrivateKey or any crypto.Signer holding an Ed25519 key.
func (e *Envelope) Sign(signer crypto.Signer) error {
	sig, err := signEd25519(signer, e.SigningBytes())
	if err != nil {
		return fmt.Errorf("sign envelope from %s: %w", e.Sender, err)
	}
	e.Signature = sig
	return nil
}

func signEd25519(signer crypto.Signer, msg []byte) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("nil signer")
	}
	if _, ok := signer.Public().(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("signer holds a %T, want an Ed25519 key", signer.Public())
	}
	sig, err := signer.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signer returned %d signature bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	return sig, nil
}

// Marshal encodes e (without Msg) as a fedgepb.Envelope.
func (e *Envelope) Marshal() ([]byte, error) {
	pb := &fedgepb.Envelope{
		ProtocolVersion: e.Version,
		SenderId:        e.Sender,
		MessageId:       e.MessageID,
		TimestampUnixMs: e.TimestampMS,
		PayloadType:     e.Type,
		Payload:         e.Payload,
		Signature:       e.Signature,
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope from %s: %w", e.Sender, err)
	}
	return b, nil
}

// NewMessageID returns MessageIDSize random bytes.
func NewMessageID() ([]byte, error) {
	id := make([]byte, MessageIDSize)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("message id: %w", err)
	}
	return id, nil
}

// Seal validates msg as a payload of type typ, wraps it in a version-1
// envelope from sender with a fresh random message id and the timestamp now,
// signs it with signer (an ed25519.PrivateKey or an Ed25519 crypto.Signer)
// and returns the marshalled envelope. It refuses payloads a receiver would
// reject for their content (not for their size, which is the receiver's
// configuration).
func Seal(signer crypto.Signer, sender string, typ fedgepb.PayloadType, msg proto.Message, now time.Time) ([]byte, error) {
	env, err := SealEnvelope(signer, sender, typ, msg, now)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// SealEnvelope is Seal returning the signed Envelope instead of its bytes
// (callers that keep the message id, e.g. to match acks, use it).
func SealEnvelope(signer crypto.Signer, sender string, typ fedgepb.PayloadType, msg proto.Message, now time.Time) (*Envelope, error) {
	if err := checkSenderID(sender); err != nil {
		return nil, fmt.Errorf("seal %v: %w", typ, err)
	}
	spec, ok := payloadSpecs[typ]
	if !ok {
		return nil, fmt.Errorf("seal: %w: %v", ErrUnknownType, typ)
	}
	if msg == nil || msg.ProtoReflect().Descriptor() != spec.new().ProtoReflect().Descriptor() {
		return nil, fmt.Errorf("seal %v from %s: payload is %T", typ, sender, msg)
	}
	if err := spec.validate(msg, sealLimits); err != nil {
		return nil, fmt.Errorf("seal %v from %s: %w", typ, sender, err)
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("seal %v from %s: marshal payload: %w", typ, sender, err)
	}
	id, err := NewMessageID()
	if err != nil {
		return nil, fmt.Errorf("seal %v from %s: %w", typ, sender, err)
	}
	env := &Envelope{
		Version:     ProtocolVersion,
		Sender:      sender,
		MessageID:   id,
		TimestampMS: now.UnixMilli(),
		Type:        typ,
		Payload:     payload,
		Msg:         msg,
	}
	if err := env.Sign(signer); err != nil {
		return nil, err
	}
	return env, nil
}

// checkSenderID accepts CoordinatorID and valid device ids.
func checkSenderID(s string) error {
	if s == CoordinatorID {
		return nil
	}
	if err := topics.ValidateID(s); err != nil {
		return fmt.Errorf("%w: sender: %w", ErrBadField, err)
	}
	return nil
}

// Open decodes and validates a raw envelope without verifying its signature
// (see Verify) or its topic (see CheckSender). The size limit is checked
// before any decoding. Every error is a *RejectError.
func Open(raw []byte, limits Limits) (*Envelope, error) {
	limits = limits.withDefaults()
	if len(raw) == 0 {
		return nil, Reject(ReasonMalformed, "empty message")
	}
	if len(raw) > limits.MaxMessageBytes {
		return nil, Reject(ReasonTooLarge, "%d bytes, limit %d", len(raw), limits.MaxMessageBytes)
	}
	var pb fedgepb.Envelope
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, &pb); err != nil {
		return nil, Reject(ReasonMalformed, "envelope: %w", err)
	}
	if len(pb.ProtoReflect().GetUnknown()) != 0 {
		return nil, Reject(ReasonMalformed, "envelope has unknown fields")
	}
	env := &Envelope{
		Version:     pb.ProtocolVersion,
		Sender:      pb.SenderId,
		MessageID:   pb.MessageId,
		TimestampMS: pb.TimestampUnixMs,
		Type:        pb.PayloadType,
		Payload:     pb.Payload,
		Signature:   pb.Signature,
	}
	if env.Version != ProtocolVersion {
		return nil, &RejectError{Reason: ReasonUnknownVersion, Sender: env.Sender,
			Err: fmt.Errorf("version %d, want %d", env.Version, ProtocolVersion)}
	}
	if err := checkSenderID(env.Sender); err != nil {
		return nil, &RejectError{Reason: ReasonBadField, Err: err}
	}
	if len(env.MessageID) != MessageIDSize {
		return nil, &RejectError{Reason: ReasonBadField, Sender: env.Sender,
			Err: fmt.Errorf("message id has %d bytes, want %d", len(env.MessageID), MessageIDSize)}
	}
	if env.TimestampMS < 0 {
		return nil, &RejectError{Reason: ReasonBadField, Sender: env.Sender,
			Err: fmt.Errorf("negative timestamp %d", env.TimestampMS)}
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, &RejectError{Reason: ReasonBadSignature, Sender: env.Sender,
			Err: fmt.Errorf("signature has %d bytes, want %d", len(env.Signature), ed25519.SignatureSize)}
	}
	msg, err := DecodePayload(env.Type, env.Payload, limits)
	if err != nil {
		return nil, withContext(err, "", env.Sender)
	}
	env.Msg = msg
	return env, nil
}

// Verify checks env's signature with the sender's public key. It is separate
// from Open because the key is looked up by the (untrusted until now) sender.
func Verify(env *Envelope, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return &RejectError{Reason: ReasonUnknownSender, Sender: env.Sender,
			Err: fmt.Errorf("public key has %d bytes", len(pub))}
	}
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, env.SigningBytes(), env.Signature) {
		return &RejectError{Reason: ReasonBadSignature, Sender: env.Sender,
			Err: fmt.Errorf("envelope %x signature does not verify", env.MessageID)}
	}
	return nil
}

// Equal reports whether a and b carry the same signed content and signature
// (Msg is not compared: it is determined by Type and Payload).
func (e *Envelope) Equal(o *Envelope) bool {
	return e.Version == o.Version && e.Sender == o.Sender && bytes.Equal(e.MessageID, o.MessageID) &&
		e.TimestampMS == o.TimestampMS && e.Type == o.Type && bytes.Equal(e.Payload, o.Payload) &&
		bytes.Equal(e.Signature, o.Signature)
}
