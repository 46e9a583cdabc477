package wire

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/transport"
)

// DefaultDedupSize is how many recent message ids Serve remembers when
// ServeConfig.DedupSize is zero.
const DefaultDedupSize = 4096

// Inbound is one accepted message handed to a Handler.
type Inbound struct {
	Topic    string
	Retained bool
	Env      *Envelope // verified; Env.Msg holds the decoded payload
}

// Handler processes one accepted message. It runs on Serve's goroutine, so
// it may publish. Returning a *RejectError counts and logs its Reason (for
// domain rejections such as a stale round); any other error counts as
// handler_error. A panic is recovered and counted as handler_panic.
type Handler func(ctx context.Context, in Inbound) error

// ServeConfig configures Serve. Keys is required; the rest have defaults.
type ServeConfig struct {
	Limits   Limits
	Keys     KeyFunc
	Log      *zap.Logger // nil: no logging
	Counters *Counters   // nil: no counting
	// DedupSize bounds the ring of recent (sender, message id) pairs used
	// to drop QoS 1 redeliveries; 0 means DefaultDedupSize.
	DedupSize int
}

// Serve reads sub until ctx is done (returning ctx.Err()) or the
// subscription's channel is closed (returning nil). Each message goes
// through Accept; a redelivery of a recently handled (sender, message id) is
// dropped as duplicate; an accepted message is passed to handler. Nothing a
// message contains and nothing handler does stops the loop: every rejection
// and handler failure is logged at warn level (debug for duplicates) with
// fields topic, sender and reason, and counted.
func Serve(ctx context.Context, sub transport.Subscription, cfg ServeConfig, handler Handler) error {
	if handler == nil {
		return fmt.Errorf("wire.Serve: nil handler")
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	size := cfg.DedupSize
	if size <= 0 {
		size = DefaultDedupSize
	}
	seen := newDedup(size)
	c := sub.C()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-c:
			if !ok {
				return nil
			}
			err := receive(ctx, m, cfg, seen, handler)
			if err == nil {
				cfg.Counters.Accepted()
				continue
			}
			re := asReject(err, m.Topic)
			cfg.Counters.Rejected(re.Reason)
			lvl := zap.WarnLevel
			if re.Reason == ReasonDuplicate {
				lvl = zap.DebugLevel
			}
			if ce := log.Check(lvl, "message rejected"); ce != nil {
				ce.Write(zap.String("topic", re.Topic), zap.String("sender", re.Sender),
					zap.String("reason", string(re.Reason)), zap.Error(re.Err))
			}
		}
	}
}

// receive runs one message through Accept, dedup and the handler.
func receive(ctx context.Context, m transport.Message, cfg ServeConfig, seen *dedup, handler Handler) error {
	env, err := Accept(m.Topic, m.Payload, cfg.Limits, cfg.Keys)
	if err != nil {
		return err
	}
	key := dedupKey(env)
	if seen.contains(key) {
		return &RejectError{Reason: ReasonDuplicate, Topic: m.Topic, Sender: env.Sender,
			Err: fmt.Errorf("message %x already handled", env.MessageID)}
	}
	err = callHandler(ctx, handler, Inbound{Topic: m.Topic, Retained: m.Retained, Env: env})
	if err != nil && ReasonOf(err) == ReasonHandlerPanic {
		// A panic may have left the message half-handled; let a
		// redelivery try again rather than drop it as a duplicate.
		return withContext(err, m.Topic, env.Sender)
	}
	// A handled message, accepted or refused by the handler, is not
	// handled again: redeliveries are idempotent.
	seen.add(key)
	if err != nil {
		if ReasonOf(err) == ReasonNone {
			err = &RejectError{Reason: ReasonHandlerError, Err: err}
		}
		return withContext(err, m.Topic, env.Sender)
	}
	return nil
}

// callHandler runs handler, turning a panic into a handler_panic rejection.
func callHandler(ctx context.Context, handler Handler, in Inbound) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &RejectError{Reason: ReasonHandlerPanic,
				Err: fmt.Errorf("%w: %v\n%s", ErrHandlerPanic, p, debug.Stack())}
		}
	}()
	return handler(ctx, in)
}

// asReject returns err as a *RejectError with the topic filled in.
func asReject(err error, topic string) *RejectError {
	re := &RejectError{Reason: ReasonHandlerError, Topic: topic, Err: err}
	var inner *RejectError
	if errors.As(err, &inner) {
		re.Reason, re.Sender = inner.Reason, inner.Sender
		if inner.Topic != "" {
			re.Topic = inner.Topic
		}
		if err == error(inner) {
			re.Err = inner.Err
		}
	}
	return re
}

func dedupKey(env *Envelope) string {
	return env.Sender + "\x00" + string(env.MessageID)
}

// dedup is a bounded set of recent keys: a ring buffer in insertion order
// plus a map for lookup; the oldest key is forgotten when the ring is full.
type dedup struct {
	ring []string
	next int
	set  map[string]struct{}
}

func newDedup(size int) *dedup {
	return &dedup{ring: make([]string, 0, size), set: make(map[string]struct{}, size)}
}

func (d *dedup) contains(k string) bool {
	_, ok := d.set[k]
	return ok
}

func (d *dedup) add(k string) {
	if d.contains(k) {
		return
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, k)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % len(d.ring)
	}
	d.set[k] = struct{}{}
}
