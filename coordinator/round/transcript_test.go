package round

import (
	"context"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/")

// scenarios are whole runs; each writes testdata/<name>.txt: the events in
// ("> ") and the Ready batches out (indented), and asserts the outcomes
// that matter so a rewritten golden file cannot hide a wrong result.
var scenarios = []struct {
	name string
	run  func(h *harness)
}{
	{"normal_round", scenarioNormal},
	{"straggler", scenarioStraggler},
	{"dropped", scenarioDropped},
	{"replay", scenarioReplay},
	{"stale_base", scenarioStaleBase},
	{"quorum_not_met", scenarioQuorumNotMet},
	{"restart", scenarioRestart},
}

func TestTranscripts(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			h := newHarness(t)
			sc.run(h)
			path := filepath.Join("testdata", sc.name+".txt")
			got := h.out.String()
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("transcript differs from %s (rerun with -update after checking):\n%s", path, diff(string(want), got))
			}
		})
	}
}

// diff shows the first differing line.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\nwant: " + wl + "\n got: " + gl
		}
	}
	return "(no line differs)"
}

// t0 is the context of the scenarios' store reads.
var t0 = context.Background()

// expect fails the scenario unless cond holds.
func (h *harness) expect(cond bool, format string, a ...any) {
	h.t.Helper()
	if !cond {
		h.t.Errorf(format, a...)
	}
}

func (h *harness) counter(reason string) uint64 { return h.m.Counters()[reason] }

// fiveDevices brings four eu devices and one us device online.
func fiveDevices(h *harness) {
	for _, d := range []struct{ id, region string }{{"dev-a", "eu"}, {"dev-b", "eu"}, {"dev-c", "eu"}, {"dev-d", "eu"}, {"dev-e", "us"}} {
		h.mustStep(online(d.id, d.region))
	}
}

// selected returns the devices holding a task of round.
func (h *harness) selected(round uint64) []string {
	var out []string
	for _, id := range []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e"} {
		if t := h.tasks[id]; t != nil && t.RoundId == round {
			out = append(out, id)
		}
	}
	return out
}

// scenarioNormal: tag-filtered selection of 3 of 4 eu devices, every update
// accepted, early commit, federated evaluation, run done after one round.
func scenarioNormal(h *harness) {
	h.mustStep(Tick{NowUnixMs: 1_000})
	fiveDevices(h)
	cfg := runConfig()
	cfg.TagFilter = map[string]string{"region": "eu"}
	cfg.FederatedEvaluation, cfg.EvalTimeoutMs = true, 30_000
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	h.expect(len(sel) == 3, "selected %v, want 3 of the eu devices", sel)
	h.expect(h.tasks["dev-e"] == nil, "dev-e (us) selected despite the tag filter")
	for i, d := range sel {
		h.mustStep(Tick{NowUnixMs: 2_000 + int64(i)*1_000})
		h.mustStep(h.train(d))
	}
	for _, d := range sel {
		h.mustStep(h.evaluate(d, 0.9))
	}
	v, err := h.st.ModelVersion(t0, 2)
	h.expect(err == nil && v.Participants == 3 && v.ParentVersion == 1, "model version 2: %v %v", v, err)
	run, _ := h.st.Run(t0, 1)
	h.expect(run.GetState() == fedgepb.RunState_RUN_STATE_DONE && run.LastAccuracy == 0.9, "run: %v", run)
	mets, _ := h.st.Metrics(t0, 1)
	h.expect(len(mets) == 1 && mets[0].EvalSamples == 150, "metrics: %v", mets)
}

// scenarioStraggler: the deadline commits with two of three updates; the
// third arrives late, in the evaluation phase and again in the next round:
// recorded once, never aggregated.
func scenarioStraggler(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction, cfg.MaxClients, cfg.Rounds = 1, 3, 2
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	h.expect(len(sel) == 3, "selected %v, want max clients 3", sel)
	h.mustStep(h.train(sel[0]))
	h.mustStep(h.train(sel[1]))
	late := h.train(sel[2])
	h.mustStep(Tick{NowUnixMs: 59_999})
	h.mustStep(Tick{NowUnixMs: 60_000})
	h.mustStep(late)
	h.mustStep(late) // redelivered: recorded once
	r1, _ := h.st.Round(t0, 1)
	h.expect(len(r1.GetParticipants()) == 2 && len(r1.GetLateDevices()) == 1, "round 1: %v", r1)
	h.expect(h.counter(ReasonLate) == 1, "late counter %d, want 1", h.counter(ReasonLate))
	v2, _ := h.st.ModelVersion(t0, 2)
	h.expect(v2.GetParticipants() == 2, "version 2 has %d participants, want 2", v2.GetParticipants())
}

// scenarioDropped: devices that give up their task are not waited for.
// Round 1 commits as soon as the two others have reported, surviving a
// restart in between; round 2 fails at once when two of three drop (quorum
// 2); in round 3 a device drops and then reports, and is counted once.
// Drops from devices not selected, for another round, repeated, or from a
// device that reported are ignored.
func scenarioDropped(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction, cfg.MaxClients, cfg.Rounds = 1, 3, 3
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	var outsider string
	for _, id := range []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e"} {
		if !slices.Contains(sel, id) {
			outsider = id
		}
	}
	h.mustStep(Tick{NowUnixMs: 1_000})
	h.mustStep(DeviceDropped{Device: sel[2], RoundID: 1, Reason: "base model v1 failed its checks"})
	h.mustStep(DeviceDropped{Device: sel[2], RoundID: 1, Reason: "again"})
	h.mustStep(DeviceDropped{Device: outsider, RoundID: 1, Reason: "not selected"})
	h.mustStep(DeviceDropped{Device: sel[1], RoundID: 2, Reason: "another round"})
	h.mustStep(h.train(sel[0]))
	h.mustStep(DeviceDropped{Device: sel[0], RoundID: 1, Reason: "after reporting"})
	h.restart()
	h.expect(h.m.Status().Phase == fedgepb.RoundPhase_ROUND_PHASE_TRAINING, "round 1 closed before its last device reported")
	h.mustStep(h.train(sel[1]))
	r1, _ := h.st.Round(t0, 1)
	h.expect(r1.GetPhase() == fedgepb.RoundPhase_ROUND_PHASE_DONE && r1.GetClosedUnixMs() == 1_000,
		"round 1 %v closed at %d, want done at 1000 (before its deadline)", r1.GetPhase(), r1.GetClosedUnixMs())
	h.expect(slices.Equal(r1.GetDroppedDevices(), []string{sel[2]}) && len(r1.GetParticipants()) == 2, "round 1: %v", r1)
	v2, _ := h.st.ModelVersion(t0, 2)
	h.expect(v2.GetMetrics().GetDropped() == 1, "version 2 metrics %v, want 1 dropped", v2.GetMetrics())

	sel2 := h.selected(2)
	h.mustStep(Tick{NowUnixMs: 2_000})
	h.mustStep(h.train(sel2[0]))
	h.mustStep(DeviceDropped{Device: sel2[1], RoundID: 2, Reason: "battery low"})
	h.mustStep(DeviceDropped{Device: sel2[2], RoundID: 2, Reason: "battery low"})
	r2, _ := h.st.Round(t0, 2)
	h.expect(r2.GetPhase() == fedgepb.RoundPhase_ROUND_PHASE_FAILED && r2.GetClosedUnixMs() == 2_000,
		"round 2 %v closed at %d, want failed at 2000", r2.GetPhase(), r2.GetClosedUnixMs())
	h.expect(h.m.Status().RoundID == 3, "round 3 not started after round 2 failed: %+v", h.m.Status())
	// A device that said it dropped and reports after all is counted once:
	// the round still waits for its third device.
	sel3 := h.selected(3)
	h.mustStep(DeviceDropped{Device: sel3[0], RoundID: 3, Reason: "retrying"})
	h.mustStep(h.train(sel3[0]))
	h.mustStep(h.train(sel3[1]))
	h.expect(h.m.Status().Phase == fedgepb.RoundPhase_ROUND_PHASE_TRAINING, "round 3 closed with its third device awaited")
	h.mustStep(h.train(sel3[2]))
	r3, _ := h.st.Round(t0, 3)
	h.expect(r3.GetPhase() == fedgepb.RoundPhase_ROUND_PHASE_DONE && len(r3.GetDroppedDevices()) == 0, "round 3: %v", r3)
	if err := h.step(DeviceDropped{Device: "a/b", RoundID: 3}); !errors.Is(err, ErrInvalidEvent) {
		h.t.Errorf("drop with a bad device id: %v, want ErrInvalidEvent", err)
	}
	if err := h.step(DeviceDropped{Device: sel[0]}); !errors.Is(err, ErrInvalidEvent) {
		h.t.Errorf("drop of round 0: %v, want ErrInvalidEvent", err)
	}
}

// scenarioReplay: a redelivered update is acked again but not counted; an
// update replayed into a later round, one with another device's nonce and
// one from a device not selected are refused and counted.
func scenarioReplay(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		h.mustStep(online(id, "eu"))
	}
	cfg := runConfig()
	cfg.Fraction, cfg.MinClients, cfg.MaxClients, cfg.Rounds = 0.5, 2, 2, 3
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	first := h.train(sel[0])
	h.mustStep(first)
	h.mustStep(first) // QoS 1 redelivery
	var outsider string
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		if h.tasks[id] == nil {
			outsider = id
		}
	}
	forged := h.train(sel[1])
	forged.Update.DeviceId = outsider
	h.mustStep(forged) // a device not selected, with a selected device's nonce
	swapped := h.train(sel[1])
	swapped.Update.Nonce = h.tasks[sel[0]].Nonce
	h.mustStep(swapped) // another device's nonce
	h.mustStep(h.train(sel[1]))
	r1, _ := h.st.Round(t0, 1)
	h.expect(r1.GetAccepted() == 2, "round 1 accepted %d, want 2", r1.GetAccepted())
	for _, d := range h.selected(2) {
		h.mustStep(h.train(d))
	}
	h.mustStep(first) // round 1's update during round 3: older than the previous round
	h.expect(h.counter(ReasonReplay) == 1 && h.counter(ReasonNotSelected) == 1 && h.counter(ReasonBadNonce) == 1,
		"counters %v", h.m.Counters())
	h.expect(h.counter(ReasonAlreadyStored) == 1, "redelivery counter %d", h.counter(ReasonAlreadyStored))
}

// scenarioStaleBase: updates trained on another model, of the wrong shape,
// with NaN, without samples, undecodable, and refused by the driver (bad
// signature, oversized) are each refused and counted; the round then
// commits with the good ones.
func scenarioStaleBase(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction, cfg.MaxClients = 1, 2
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	a := sel[0]
	bad := []struct {
		reason string
		mutate func(u *fedgepb.Update)
	}{
		{ReasonStaleBase, func(u *fedgepb.Update) { u.BaseModelHash = make([]byte, 32) }},
		{ReasonWrongShape, func(u *fedgepb.Update) { u.EncodedDelta = EncodeWeights(make([]float32, testDim+1)) }},
		{ReasonNonFinite, func(u *fedgepb.Update) { u.EncodedDelta = EncodeWeights([]float32{0, float32(math.NaN()), 0, 0}) }},
		{ReasonNoSamples, func(u *fedgepb.Update) { u.SampleCount = 0 }},
		{ReasonBadEncoding, func(u *fedgepb.Update) { u.EncodedDelta = []byte{1, 2, 3} }},
		{ReasonBadEncoding, func(u *fedgepb.Update) { u.Codec = fedgepb.Codec_CODEC_INT8 }},
	}
	for _, b := range bad {
		ev := h.train(a)
		b.mutate(ev.Update)
		h.mustStep(ev)
	}
	h.mustStep(UpdateRefused{MessageID: h.msgID(), Device: a, RoundID: 1, Reason: "bad_signature"})
	h.mustStep(UpdateRefused{MessageID: h.msgID(), Device: a, RoundID: 1, Reason: "oversized"})
	for _, d := range sel {
		h.mustStep(h.train(d))
	}
	r1, _ := h.st.Round(t0, 1)
	h.expect(r1.GetRejections()[ReasonStaleBase] == 1 && r1.GetRejections()[ReasonBadEncoding] == 2 &&
		r1.GetRejections()["bad_signature"] == 1 && r1.GetAccepted() == 2, "round 1: %v", r1)
	mets, _ := h.st.Metrics(t0, 1)
	h.expect(len(mets) == 1 && mets[0].Rejections[ReasonWrongShape] == 1, "metrics: %v", mets)
}

// scenarioQuorumNotMet: one of two required updates by the deadline fails
// the round; the next round also fails and the run fails after the
// configured two consecutive failures.
func scenarioQuorumNotMet(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction, cfg.MaxClients, cfg.MaxFailedRounds = 1, 2, 2
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	h.mustStep(h.train(h.selected(1)[0]))
	h.mustStep(Tick{NowUnixMs: 60_000})
	r1, _ := h.st.Round(t0, 1)
	h.expect(r1.GetPhase() == fedgepb.RoundPhase_ROUND_PHASE_FAILED, "round 1: %v", r1)
	ups, _ := h.st.Updates(t0, 1)
	h.expect(len(ups) == 0, "failed round kept %d updates in flight", len(ups))
	h.mustStep(Tick{NowUnixMs: 120_000})
	run, _ := h.st.Run(t0, 1)
	h.expect(run.GetState() == fedgepb.RunState_RUN_STATE_FAILED, "run: %v", run)
	latest, _ := h.st.LatestModelVersion(t0)
	h.expect(latest == 1, "a failed round produced version %d", latest)
}

// scenarioRestart: the run waits for devices, then the coordinator restarts
// mid-training (an acked update persisted, its ack perhaps lost), during
// evaluation, and after a server-side evaluation; nothing is lost or counted
// twice and the result matches a run without restarts.
func scenarioRestart(h *harness) {
	h.mustStep(Tick{NowUnixMs: 0})
	cfg := runConfig()
	cfg.Fraction, cfg.MinClients, cfg.MaxClients, cfg.Quorum = 1, 3, 3, 3
	cfg.FederatedEvaluation, cfg.ServerEvaluation, cfg.EvalTimeoutMs = true, true, 10_000
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	h.mustStep(online("dev-a", "eu")) // not enough yet: the round waits
	h.restart()
	h.mustStep(online("dev-b", "eu"))
	h.mustStep(online("dev-c", "eu"))
	sel := h.selected(1)
	first := h.train(sel[0])
	h.mustStep(first)
	h.restart()
	h.mustStep(first) // the device never saw the ack and resends
	h.mustStep(h.train(sel[1]))
	h.mustStep(h.train(sel[2]))
	h.restart()
	h.mustStep(h.evaluate(sel[0], 0.8))
	h.restart()
	h.mustStep(EvalComputed{RoundID: 1, Loss: 0.3, Accuracy: 0.85})
	h.mustStep(h.evaluate(sel[1], 0.8))
	h.mustStep(h.evaluate(sel[2], 0.8))
	v2, err := h.st.ModelVersion(t0, 2)
	h.expect(err == nil && v2.Participants == 3, "version 2: %v %v", v2, err)
	want := referenceModel(sel)
	h.expect(err == nil && string(v2.Weights) == string(EncodeWeights(want)), "version 2 weights differ from a FedAvg of the 3 updates")
	run, _ := h.st.Run(t0, 1)
	h.expect(run.GetState() == fedgepb.RunState_RUN_STATE_DONE && run.LastAccuracy == 0.85, "run: %v", run)
}

// referenceModel is the initial model plus the sample-weighted mean of the
// devices' round-1 deltas, in float64.
func referenceModel(devices []string) []float32 {
	base, _ := DecodeWeights(initialModel().Weights, testDim)
	sum := make([]float64, testDim)
	var total float64
	for _, d := range devices {
		n := float64(100 + len(d))
		for i, v := range delta(d, 1) {
			sum[i] += n * float64(v)
		}
		total += n
	}
	out := make([]float32, testDim)
	for i := range out {
		out[i] = base[i] + float32(sum[i]/total)
	}
	return out
}
