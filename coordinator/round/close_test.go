package round

import (
	"testing"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// deferredAvg is a FedAvg that, like the secure aggregator, keeps training
// open when every selected device has reported.
type deferredAvg struct{ fedAvg }

func (*deferredAvg) Deferred() bool { return true }

// TestCloseTraining: with a Deferred aggregator the round stays in
// training after the last update; CloseTraining commits it, and with a
// reason fails it instead. Events for another round are ignored.
func TestCloseTraining(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		phase        fedgepb.RoundPhase
	}{
		{"commit", "", fedgepb.RoundPhase_ROUND_PHASE_DONE},
		{"fail", "secure aggregation aborted", fedgepb.RoundPhase_ROUND_PHASE_FAILED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.cfg.NewAggregator = func(_ *fedgepb.RunConfig, _ uint64, dim int) (Aggregator, error) {
				return &deferredAvg{fedAvg{sum: make([]float64, dim)}}, nil
			}
			m, err := New(h.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.m = m
			h.mustStep(online("a", "eu"))
			h.mustStep(online("b", "eu"))
			cfg := runConfig()
			cfg.Fraction = 1
			h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
			h.mustStep(h.train("a"))
			h.mustStep(h.train("b"))
			if st := h.m.Status(); st.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING || st.Accepted != 2 {
				t.Fatalf("after every update: %+v, want training with 2 accepted", st)
			}
			h.mustStep(CloseTraining{RoundID: 99})
			if st := h.m.Status(); st.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
				t.Fatalf("close of another round changed the phase: %+v", st)
			}
			if err := h.step(CloseTraining{}); err == nil {
				t.Fatal("close of round 0 accepted")
			}
			h.mustStep(CloseTraining{RoundID: 1, Reason: tc.reason})
			rec, err := h.st.Round(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Phase != tc.phase || rec.Reason != tc.reason {
				t.Fatalf("round 1 is %v (%q), want %v (%q)", rec.Phase, rec.Reason, tc.phase, tc.reason)
			}
		})
	}
}
