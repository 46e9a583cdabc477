package wire_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/fedge-dev/fedge/internal/wire"
)

func TestRejectErrorIsAndAs(t *testing.T) {
	sentinels := map[wire.Reason]error{
		wire.ReasonMalformed: wire.ErrMalformed, wire.ReasonUnknownVersion: wire.ErrUnknownVersion,
		wire.ReasonTooLarge: wire.ErrTooLarge, wire.ReasonUnknownType: wire.ErrUnknownType,
		wire.ReasonBadField: wire.ErrBadField, wire.ReasonHashMismatch: wire.ErrHashMismatch,
		wire.ReasonBadTopic: wire.ErrBadTopic, wire.ReasonSenderMismatch: wire.ErrSenderMismatch,
		wire.ReasonWrongType: wire.ErrWrongType, wire.ReasonUnknownSender: wire.ErrUnknownSender,
		wire.ReasonBadSignature: wire.ErrBadSignature, wire.ReasonDuplicate: wire.ErrDuplicate,
		wire.ReasonHandlerPanic: wire.ErrHandlerPanic,
	}
	for r, s := range sentinels {
		err := fmt.Errorf("outer: %w", wire.Reject(r, "detail %d", 1))
		if !errors.Is(err, s) {
			t.Errorf("%s: errors.Is(%v) false", r, s)
		}
		if got := wire.ReasonOf(err); got != r {
			t.Errorf("ReasonOf = %q, want %q", got, r)
		}
		for r2, s2 := range sentinels {
			if r2 != r && errors.Is(err, s2) {
				t.Errorf("%s matches sentinel of %s", r, r2)
			}
		}
	}
	inner := errors.New("inner")
	err := wire.Reject(wire.ReasonBadField, "x: %w", inner)
	if !errors.Is(err, inner) {
		t.Errorf("cause lost")
	}
	re := &wire.RejectError{Reason: wire.ReasonBadField, Topic: "t", Sender: "s", Err: inner}
	if got, want := re.Error(), "rejected (bad_field) from s on t: inner"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if wire.ReasonOf(nil) != wire.ReasonNone || wire.ReasonOf(inner) != wire.ReasonNone {
		t.Errorf("ReasonOf of a non-reject error is not none")
	}
	if len(wire.Reasons()) != len(sentinels)+1 { // + handler_error, which has no sentinel
		t.Errorf("Reasons() lists %d reasons", len(wire.Reasons()))
	}
}

func TestCountersConcurrent(t *testing.T) {
	var c wire.Counters
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if i%2 == 0 {
					c.Accepted()
				} else {
					c.Rejected(wire.Reasons()[(g+i)%3])
				}
				_ = c.Snapshot()
			}
		}()
	}
	wg.Wait()
	s := c.Snapshot()
	if s.Accepted != 4000 || s.Total() != 4000 {
		t.Fatalf("snapshot %+v", s)
	}
	var sum uint64
	for _, r := range s.SortedReasons() {
		if c.Count(r) != s.Rejected[r] {
			t.Errorf("Count(%s) = %d, snapshot %d", r, c.Count(r), s.Rejected[r])
		}
		sum += c.Count(r)
	}
	if sum != 4000 || len(s.Rejected) != 3 {
		t.Fatalf("per-reason counts %v", s.Rejected)
	}
	if c.Count("never") != 0 {
		t.Fatalf("unseen reason counted")
	}
}

func TestCountersNil(t *testing.T) {
	var c *wire.Counters
	c.Accepted()
	c.Rejected(wire.ReasonMalformed)
	if c.Count(wire.ReasonMalformed) != 0 || c.Snapshot().Total() != 0 || c.Snapshot().Rejected == nil {
		t.Fatalf("nil counters not empty")
	}
}
