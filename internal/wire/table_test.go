package wire_test

import (
	"errors"
	"testing"

	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
)

// TestTable runs every shared good and bad message through Accept and checks
// the verdict and that the error is a RejectError carrying the topic.
func TestTable(t *testing.T) {
	cases := wiretest.Cases()
	names := map[string]bool{}
	reasons := map[wire.Reason]int{}
	for _, c := range cases {
		if names[c.Name] {
			t.Fatalf("duplicate case name %q", c.Name)
		}
		names[c.Name] = true
		reasons[c.Reason]++
		t.Run(c.Name, func(t *testing.T) {
			env, err := wire.Accept(c.Topic, c.Raw, wiretest.Limits(), wiretest.Keys())
			if got := wire.ReasonOf(err); got != c.Reason {
				t.Fatalf("reason %q, want %q (err: %v)", got, c.Reason, err)
			}
			if c.Reason == wire.ReasonNone {
				if env == nil || env.Msg == nil {
					t.Fatalf("accepted without a decoded envelope")
				}
				return
			}
			var re *wire.RejectError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *RejectError", err)
			}
			if re.Topic != c.Topic {
				t.Errorf("RejectError.Topic = %q, want %q", re.Topic, c.Topic)
			}
			if env != nil {
				t.Errorf("rejected but returned an envelope")
			}
		})
	}
	// The table must cover every acceptance-relevant reason.
	for _, r := range []wire.Reason{wire.ReasonNone, wire.ReasonMalformed, wire.ReasonUnknownVersion,
		wire.ReasonTooLarge, wire.ReasonUnknownType, wire.ReasonBadField, wire.ReasonHashMismatch,
		wire.ReasonBadTopic, wire.ReasonSenderMismatch, wire.ReasonWrongType, wire.ReasonUnknownSender,
		wire.ReasonBadSignature} {
		if reasons[r] == 0 {
			t.Errorf("table has no case with reason %q", r)
		}
	}
}
