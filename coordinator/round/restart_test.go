package round

import (
	"context"
	"fmt"
	"strings"
	"testing"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// restartScript is a three-round run with federated evaluation, refusals, a
// deadline commit, a straggler and an evaluation timeout. It returns fresh
// steps (they share state through closures).
func restartScript() []func(h *harness) {
	var late UpdateReceived
	train := func(round uint64, i int) func(h *harness) {
		return func(h *harness) { h.mustStep(h.train(h.selected(round)[i])) }
	}
	eval := func(round uint64, i int) func(h *harness) {
		return func(h *harness) { h.mustStep(h.evaluate(h.selected(round)[i], 0.7+0.05*float64(round))) }
	}
	tick := func(ms int64) func(h *harness) { return func(h *harness) { h.mustStep(Tick{NowUnixMs: ms}) } }
	steps := []func(h *harness){
		tick(0),
		func(h *harness) {
			for _, id := range []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e"} {
				h.mustStep(online(id, "eu"))
			}
		},
		func(h *harness) {
			cfg := runConfig()
			cfg.Fraction, cfg.Rounds, cfg.FederatedEvaluation, cfg.EvalTimeoutMs = 0.6, 3, true, 10_000
			h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
		},
		tick(1_000),
		train(1, 0),
		func(h *harness) {
			stale := h.train(h.selected(1)[1])
			stale.Update.BaseModelHash = make([]byte, 32)
			h.mustStep(stale)
		},
		train(1, 1),
		tick(2_000),
		train(1, 2),
		eval(1, 0), eval(1, 1), eval(1, 2),
		tick(3_000),
		train(2, 0),
		train(2, 1),
		func(h *harness) { late = h.train(h.selected(2)[2]) },
		tick(70_000), // round 2 deadline: commit with two updates
		func(h *harness) { h.mustStep(late) },
		eval(2, 0), eval(2, 1),
		tick(80_000), // evaluation deadline: round 3 starts
		train(3, 0), train(3, 1), train(3, 2),
		eval(3, 0), eval(3, 1), eval(3, 2),
	}
	return steps
}

// outcome is what a run must produce regardless of restarts: every model
// version with its lineage and weights, every round's participants and
// lateness, and the run's end.
func outcome(t *testing.T, h *harness) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	vs, err := h.st.ModelVersions(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		fmt.Fprintf(&b, "version %d parent %d round %d participants %d weights %s\n",
			v.Version, v.ParentVersion, v.RoundId, v.Participants, formatBytes(v.Weights))
	}
	rounds, err := h.st.Rounds(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rounds {
		fmt.Fprintf(&b, "round %d %v participants %v late %v evals %d\n", r.RoundId, r.Phase, r.Participants, r.LateDevices, len(r.Evals))
		if ups, _ := h.st.Updates(ctx, r.RoundId); len(ups) != 0 {
			fmt.Fprintf(&b, "round %d keeps %d updates in flight\n", r.RoundId, len(ups))
		}
	}
	run, err := h.st.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "run %v committed %d accuracy %v\n", run.State, run.RoundsCommitted, run.LastAccuracy)
	return b.String()
}

// TestRestartAnywhere kills the coordinator after every step of the script
// (after the persist of that step's Ready and before anything reaches a
// device), restarts it from the store, lets the last update's device resend
// it as if its ack had been lost, and checks the run ends exactly as
// without the restart: no acknowledged update lost, none counted twice.
func TestRestartAnywhere(t *testing.T) {
	base := newHarness(t)
	for _, step := range restartScript() {
		step(base)
	}
	want := outcome(t, base)
	if !strings.Contains(want, "run RUN_STATE_DONE committed 3") {
		t.Fatalf("baseline run did not finish 3 rounds:\n%s", want)
	}
	steps := len(restartScript())
	for k := 1; k <= steps; k++ {
		h := newHarness(t)
		script := restartScript()
		for _, step := range script[:k] {
			step(h)
		}
		h.restart()
		if ev, ok := lastUpdate(h); ok {
			h.mustStep(ev)
		}
		for _, step := range script[k:] {
			step(h)
		}
		if got := outcome(t, h); got != want {
			t.Fatalf("restart after step %d changed the outcome:\n got:\n%s\nwant:\n%s", k, got, want)
		}
	}
}

// lastUpdate returns the last update event of the transcript so far.
func lastUpdate(h *harness) (UpdateReceived, bool) {
	// The harness keeps no event log; rebuild the resend from the newest
	// stored update in flight, the one most likely to have lost its ack.
	snap, err := LoadSnapshot(context.Background(), h.st, h.now)
	if err != nil || len(snap.Updates) == 0 {
		return UpdateReceived{}, false
	}
	u := snap.Updates[len(snap.Updates)-1]
	task := h.tasks[u.DeviceId]
	return UpdateReceived{MessageID: u.MessageId, Update: &fedgepb.Update{
		RoundId: u.RoundId, DeviceId: u.DeviceId, BaseModelHash: snap.Round.BaseHash, SampleCount: u.SampleCount,
		Codec: u.Codec, EncodedDelta: u.EncodedDelta, Metrics: u.Metrics, Nonce: task.GetNonce(),
	}}, true
}
