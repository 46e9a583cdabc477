package wire

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Reason says why a message was rejected. It is a short snake_case string so
// that it can be used directly as a log field and a metrics label. The
// constants below are the reasons this package produces; callers (the
// coordinator, the agent) may define their own for domain checks and count
// them in the same Counters.
type Reason string

// Reasons produced by Open, CheckSender, Verify, Accept and Serve.
const (
	// ReasonNone is the zero Reason: the message was accepted.
	ReasonNone Reason = ""
	// ReasonMalformed: the bytes are not a protobuf Envelope, or the payload
	// is not a protobuf of the announced type.
	ReasonMalformed Reason = "malformed"
	// ReasonUnknownVersion: the envelope's protocol version is not one this
	// build speaks.
	ReasonUnknownVersion Reason = "unknown_version"
	// ReasonTooLarge: the raw message exceeds Limits.MaxMessageBytes, or a
	// field exceeds its own limit.
	ReasonTooLarge Reason = "too_large"
	// ReasonUnknownType: the payload type is unspecified or not known.
	ReasonUnknownType Reason = "unknown_type"
	// ReasonBadField: a field has an invalid value (bad id syntax, hash
	// length, zero round id, non-finite float, insane count...).
	ReasonBadField Reason = "bad_field"
	// ReasonHashMismatch: content does not match the hash it carries (a
	// blob chunk whose data does not hash to its chunk hash).
	ReasonHashMismatch Reason = "hash_mismatch"
	// ReasonBadTopic: the topic is not a fedge topic.
	ReasonBadTopic Reason = "bad_topic"
	// ReasonSenderMismatch: the envelope's sender (or a device id inside
	// the payload) does not match the topic.
	ReasonSenderMismatch Reason = "sender_mismatch"
	// ReasonWrongType: the payload type is not one that travels on the
	// topic's kind (an update on a status topic, a task on the manifest
	// topic...).
	ReasonWrongType Reason = "wrong_type"
	// ReasonUnknownSender: no public key is known for the sender.
	ReasonUnknownSender Reason = "unknown_sender"
	// ReasonBadSignature: the signature is missing, malformed or does not
	// verify (for the envelope or an embedded model manifest).
	ReasonBadSignature Reason = "bad_signature"
	// ReasonDuplicate: a redelivery of a message id already handled.
	ReasonDuplicate Reason = "duplicate"
	// ReasonHandlerError: the handler returned an error that is not a
	// *RejectError.
	ReasonHandlerError Reason = "handler_error"
	// ReasonHandlerPanic: the handler panicked; Serve recovered.
	ReasonHandlerPanic Reason = "handler_panic"
)

// Reasons lists the reasons this package produces, for callers that
// pre-register metric label values.
func Reasons() []Reason {
	return []Reason{
		ReasonMalformed, ReasonUnknownVersion, ReasonTooLarge, ReasonUnknownType,
		ReasonBadField, ReasonHashMismatch, ReasonBadTopic, ReasonSenderMismatch,
		ReasonWrongType, ReasonUnknownSender, ReasonBadSignature, ReasonDuplicate,
		ReasonHandlerError, ReasonHandlerPanic,
	}
}

// Sentinel errors, one per reason, so callers can test with errors.Is
// (every *RejectError of a reason matches its sentinel).
var (
	ErrMalformed      = errors.New("malformed message")
	ErrUnknownVersion = errors.New("unknown protocol version")
	ErrTooLarge       = errors.New("message too large")
	ErrUnknownType    = errors.New("unknown payload type")
	ErrBadField       = errors.New("invalid field")
	ErrHashMismatch   = errors.New("hash mismatch")
	ErrBadTopic       = errors.New("not a fedge topic")
	ErrSenderMismatch = errors.New("sender does not match topic")
	ErrWrongType      = errors.New("payload type not allowed on topic")
	ErrUnknownSender  = errors.New("unknown sender")
	ErrBadSignature   = errors.New("bad signature")
	ErrDuplicate      = errors.New("duplicate message")
	ErrHandlerPanic   = errors.New("handler panicked")
)

var sentinels = map[Reason]error{
	ReasonMalformed:      ErrMalformed,
	ReasonUnknownVersion: ErrUnknownVersion,
	ReasonTooLarge:       ErrTooLarge,
	ReasonUnknownType:    ErrUnknownType,
	ReasonBadField:       ErrBadField,
	ReasonHashMismatch:   ErrHashMismatch,
	ReasonBadTopic:       ErrBadTopic,
	ReasonSenderMismatch: ErrSenderMismatch,
	ReasonWrongType:      ErrWrongType,
	ReasonUnknownSender:  ErrUnknownSender,
	ReasonBadSignature:   ErrBadSignature,
	ReasonDuplicate:      ErrDuplicate,
	ReasonHandlerPanic:   ErrHandlerPanic,
}

// RejectError is the error of every rejection: a Reason to count by, the
// topic and sender it came from (when known) and the detailed cause.
type RejectError struct {
	Reason Reason
	Topic  string
	Sender string
	Err    error
}

// Error implements error.
func (e *RejectError) Error() string {
	s := "rejected (" + string(e.Reason) + ")"
	if e.Sender != "" {
		s += " from " + e.Sender
	}
	if e.Topic != "" {
		s += " on " + e.Topic
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *RejectError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrXxx) true for a RejectError of reason Xxx.
func (e *RejectError) Is(target error) bool {
	s, ok := sentinels[e.Reason]
	return ok && s == target
}

// Reject returns a *RejectError of reason r whose cause is formatted like
// fmt.Errorf (so %w works). Callers use it for their own domain checks.
func Reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of the first *RejectError in err's chain, or
// ReasonNone if err is nil or carries no RejectError.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ReasonNone
}

// withContext returns err with topic and sender filled in where its
// RejectError lacks them. It never modifies err (a handler or KeyFunc may
// return a shared *RejectError value): it returns a copy.
func withContext(err error, topic, sender string) error {
	var re *RejectError
	if !errors.As(err, &re) || (re.Topic != "" || topic == "") && (re.Sender != "" || sender == "") {
		return err
	}
	c := *re
	if c.Topic == "" {
		c.Topic = topic
	}
	if c.Sender == "" {
		c.Sender = sender
	}
	if err != error(re) {
		c.Err = err // keep the outer wrapping as the cause
	}
	return &c
}

// Counters counts accepted and rejected messages by reason. All methods are
// safe for concurrent use and on a nil *Counters (they do nothing). One
// Counters may be shared by several Serve loops.
type Counters struct {
	accepted atomic.Uint64
	rejected sync.Map // Reason -> *atomic.Uint64
}

// Accepted increments the accepted count.
func (c *Counters) Accepted() {
	if c != nil {
		c.accepted.Add(1)
	}
}

// Rejected increments the count of reason r.
func (c *Counters) Rejected(r Reason) {
	if c == nil {
		return
	}
	v, ok := c.rejected.Load(r)
	if !ok {
		v, _ = c.rejected.LoadOrStore(r, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

// Count returns the current count of reason r.
func (c *Counters) Count(r Reason) uint64 {
	if c == nil {
		return 0
	}
	v, ok := c.rejected.Load(r)
	if !ok {
		return 0
	}
	return v.(*atomic.Uint64).Load()
}

// Snapshot is a point-in-time copy of Counters.
type Snapshot struct {
	Accepted uint64
	Rejected map[Reason]uint64 // only reasons seen at least once
}

// Total returns the sum of all rejections.
func (s Snapshot) Total() uint64 {
	var n uint64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// SortedReasons returns the reasons in s in lexical order.
func (s Snapshot) SortedReasons() []Reason {
	rs := make([]Reason, 0, len(s.Rejected))
	for r := range s.Rejected {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
	return rs
}

// Snapshot copies the current counts. Counts of different reasons are read
// one after the other, not atomically as a set.
func (c *Counters) Snapshot() Snapshot {
	s := Snapshot{Rejected: map[Reason]uint64{}}
	if c == nil {
		return s
	}
	s.Accepted = c.accepted.Load()
	c.rejected.Range(func(k, v any) bool {
		if n := v.(*atomic.Uint64).Load(); n > 0 {
			s.Rejected[k.(Reason)] = n
		}
		return true
	})
	return s
}
