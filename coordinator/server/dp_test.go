package server

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/aggregation"
	"github.com/fedge-dev/fedge/aggregation/dp"
	"github.com/fedge-dev/fedge/coordinator/admin"
)

func dpReq(rounds, minClients uint32) admin.StartRequest {
	r := startReq(rounds, minClients)
	r.DPNoiseMultiplier, r.DPClip, r.DPNoiseSeed = 1, 0.5, 99
	return r
}

// TestDPStartRequest checks the validation of the dp_* fields and what a
// valid request puts into the run configuration.
func TestDPStartRequest(t *testing.T) {
	mod := func(f func(*admin.StartRequest)) admin.StartRequest {
		r := dpReq(1, 1)
		f(&r)
		return r
	}
	bad := map[string]admin.StartRequest{
		"no clip":             mod(func(r *admin.StartRequest) { r.DPClip = 0 }),
		"negative clip":       mod(func(r *admin.StartRequest) { r.DPClip = -1 }),
		"NaN clip":            mod(func(r *admin.StartRequest) { r.DPClip = math.NaN() }),
		"clip beyond float32": mod(func(r *admin.StartRequest) { r.DPClip = 1e300 }),
		"NaN noise":           mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier = math.NaN() }),
		"negative noise":      mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier = -1 }),
		"infinite noise":      mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier = math.Inf(1) }),
		"tiny noise":          mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier = 1e-300 }),
		"delta 1":             mod(func(r *admin.StartRequest) { r.DPDelta = 1 }),
		"sampling above 1":    mod(func(r *admin.StartRequest) { r.DPSamplingRate = 1.5 }),
		"other clip norm":     mod(func(r *admin.StartRequest) { r.ClipNorm = 2 }),
		"robust strategy":     mod(func(r *admin.StartRequest) { r.Strategy = "median" }),
		"with secure":         mod(func(r *admin.StartRequest) { r.Secure = true }),
		"clip without noise":  mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier = 0 }),
		"seed without noise":  mod(func(r *admin.StartRequest) { r.DPNoiseMultiplier, r.DPClip = 0, 0 }),
		"dp set directly": func() admin.StartRequest {
			r := startReq(1, 1)
			r.StrategyConfig = []byte(`{"dp": {"noise_multiplier": 1, "clip": 1, "sampling_rate": 1, "delta": 0.001}}`)
			return r
		}(),
	}
	for name, req := range bad {
		if _, err := RunConfig(req); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("%s: err %v, want a bad request", name, err)
		}
	}
	req := dpReq(1, 1)
	req.Fraction, req.DPClip = 0.25, 0.3
	cfg, err := RunConfig(req)
	if err != nil {
		t.Fatal(err)
	}
	d := dpOf(cfg)
	want := DPConfig{NoiseMultiplier: 1, Clip: float64(float32(0.3)), SamplingRate: 0.25, Delta: DefaultDPDelta, NoiseSeed: 99}
	if d == nil || *d != want {
		t.Fatalf("dp config %+v, want %+v", d, want)
	}
	if cfg.Train.ClipNorm != float32(0.3) {
		t.Fatalf("devices clip to %v, want the dp clip 0.3", cfg.Train.ClipNorm)
	}
	st, err := NewStrategy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name() != "dp(fedavg)" || !st.SumBased() {
		t.Fatalf("strategy %s", st.Name())
	}
	req.ClipNorm = float32(0.3) // the same clip stated twice is fine
	if _, err := RunConfig(req); err != nil {
		t.Fatal(err)
	}
	if cfg, err := RunConfig(startReq(1, 1)); err != nil || dpOf(cfg) != nil {
		t.Fatalf("a plain run has dp %+v (%v)", dpOf(cfg), err)
	}
}

// TestDPRobustHTTP400 asks over the admin HTTP API for DP with a robust
// strategy: a 400 naming the strategy.
func TestDPRobustHTTP400(t *testing.T) {
	h := newHarness(t)
	h.start()
	r := dpReq(1, 1)
	r.Strategy = "krum"
	if code, msg := h.postStart(t, r); code != http.StatusBadRequest || !strings.Contains(msg, `strategy \"krum\"`) {
		t.Fatalf("status %d, body %s; want 400 naming krum", code, msg)
	}
}

// expectDP is the DP-FedAvg step: base + (Σ clip(delta_i) + noise)/n.
func expectDP(base []float32, vals []float32, clip, z float64, seed, round uint64) []float32 {
	sum := make([]float64, len(base))
	scratch := make([]float32, len(base))
	for _, v := range vals {
		aggregation.ClipL2(scratch, constDelta(len(base), v), clip)
		for i, x := range scratch {
			sum[i] += float64(x)
		}
	}
	dp.AddGaussianNoise(sum, z*clip, dp.KeyFromSeed(seed), round)
	out := make([]float32, len(base))
	for i, b := range base {
		out[i] = float32(float64(b) + sum[i]/float64(len(vals)))
	}
	return out
}

// TestDPRun runs three DP rounds over the in-memory transport, restarting
// the coordinator after the first: each new model is the noisy clipped
// mean (not the FedAvg of the same updates), ε is reported and grows
// with the rounds, and the restarted coordinator's accountant resumes
// from the persisted round count.
func TestDPRun(t *testing.T) {
	h := newHarness(t)
	ids := []string{"dev-a", "dev-b", "dev-c"}
	h.approve(ids...)
	h.start()
	ag := map[string]*agent{}
	for _, id := range ids {
		ag[id] = h.agent(id)
		ag[id].hello(nil)
	}
	h.waitFor("devices online", func() bool { return h.status().DevicesOnline == 3 })
	req := dpReq(3, 3)
	run := h.startRun(req)
	if run.DP == nil || run.DP.Epsilon != 0 || run.DP.RoundsCharged != 0 || run.DP.Delta != DefaultDPDelta || run.Strategy != "fedavg" {
		t.Fatalf("run %+v dp %+v", run, run.DP)
	}
	dim := h.dimOf()
	samples := []uint64{10, 30, 60}
	vals := []float32{0.1, -0.2, 0.05} // norms 0.1·√dim etc.: some above the clip
	prevEps := 0.0
	var prevRound uint64
	for r := 1; r <= 3; r++ {
		if r == 2 {
			h.start() // restart between rounds on the same store
		}
		var base, roundID uint64
		for i, id := range ids {
			task := ag[id].task()
			for task.RoundId <= prevRound { // a task republished by the restart
				task = ag[id].task()
			}
			if task.Train.GetClipNorm() != float32(req.DPClip) {
				t.Fatalf("round %d: task clip norm %v, want the dp clip %v", r, task.Train.GetClipNorm(), req.DPClip)
			}
			base, roundID = task.ModelVersion, task.RoundId
			msg := ag[id].sendUpdate(ag[id].update(task, samples[i], constDelta(dim, vals[i])))
			if ack := ag[id].ack(msg); !ack.Accepted {
				t.Fatalf("round %d: %s not accepted: %+v", r, id, ack)
			}
		}
		prevRound = roundID
		h.waitFor("commit", func() bool { return h.status().ModelVersion == base+1 })
		got := h.weights(base + 1)
		assertClose(t, got, expectDP(h.weights(base), vals, float64(float32(req.DPClip)), req.DPNoiseMultiplier, req.DPNoiseSeed, roundID))
		plain := expectFedAvg(h.weights(base), samples, vals)
		diff := 0.0
		for i := range got {
			diff = max(diff, math.Abs(float64(got[i]-plain[i])))
		}
		if diff < 1e-3 {
			t.Fatalf("round %d: the DP model is within %v of the FedAvg model", r, diff)
		}
		st := h.status()
		d := st.Run.DP
		if d == nil || d.RoundsCharged != uint32(r) || !(d.Epsilon > prevEps) || math.IsInf(d.Epsilon, 0) {
			t.Fatalf("round %d: dp %+v, previous epsilon %v", r, d, prevEps)
		}
		wantEps, err := dpEpsilon(&DPConfig{NoiseMultiplier: 1, Clip: 0.5, SamplingRate: 1, Delta: DefaultDPDelta}, uint32(r))
		if err != nil || math.Abs(d.Epsilon-wantEps) > 1e-9 {
			t.Fatalf("round %d: epsilon %v, want %v (%v)", r, d.Epsilon, wantEps, err)
		}
		prevEps = d.Epsilon
		if r == 2 {
			// The restarted coordinator's in-memory accountant resumed from
			// round 1 and charged round 2.
			h.srv.strat.mu.Lock()
			acct := h.srv.strat.active.(*dp.Strategy).Accountant()
			eps, _, err := acct.Epsilon(DefaultDPDelta)
			h.srv.strat.mu.Unlock()
			if err != nil || math.Abs(eps-wantEps) > 1e-9 {
				t.Fatalf("restored accountant epsilon %v (%v), want %v", eps, err, wantEps)
			}
		}
	}
	h.waitFor("run done", func() bool { return h.status().Run.State == "done" })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	runs, err := h.srv.Runs(ctx)
	if err != nil || len(runs) != 1 || runs[0].DP == nil || runs[0].DP.Epsilon != prevEps {
		t.Fatalf("runs %+v (%v)", runs, err)
	}
}
