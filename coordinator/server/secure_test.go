package server

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/aggregation/secagg"
	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// secureDevice is a fake device running the secagg client by hand.
type secureDevice struct {
	*agent
	task    *fedgepb.RoundTask
	client  *secagg.Client
	samples uint64
	delta   []float32
}

// next returns the device's next secagg message of a wire stage.
func (d *secureDevice) stageMsg(stage uint32) []byte {
	d.h.t.Helper()
	for {
		m := d.next(fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG).Msg.(*fedgepb.SecAggMessage)
		if m.RoundId == d.task.RoundId && m.Stage == stage {
			return m.Body
		}
	}
}

func (d *secureDevice) sendStage(stage uint32, body []byte) {
	d.send(topics.KindSecAgg, fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG, &fedgepb.SecAggMessage{RoundId: d.task.RoundId, Stage: stage, Body: body})
}

func secureReq(rounds uint32, minClients uint32) admin.StartRequest {
	r := startReq(rounds, minClients)
	r.Secure, r.SecureThreshold = true, 0.6
	return r
}

// TestSecureRoundWithDropouts runs one secure round over the memory
// transport with seven devices: one never advertises its keys, one sends
// no masked input and one does not answer the unmasking request. The round
// commits the sample-weighted mean of the five masked inputs that arrived
// (within fixed-point precision). One masked input comes as a blob.
func TestSecureRoundWithDropouts(t *testing.T) {
	runSecureRound(t, []string{"sa-1", "sa-2", "sa-3", "sa-4", "sa-5", "sa-6", "sa-7"}, 3, "")
}

// TestSecureRoundTooFewAborts drops the same three devices of six: only
// three answer the unmasking request, below the threshold of four, so the
// round fails (recorded) and no model is produced.
func TestSecureRoundTooFewAborts(t *testing.T) {
	runSecureRound(t, []string{"sa-1", "sa-2", "sa-3", "sa-4", "sa-5", "sa-6"}, 3, "secure aggregation aborted in Unmasking")
}

// TestSecureRoundQuorumStopsBeforeUnmasking: five of seven masked inputs
// arrive but the quorum is six, so the round fails when the masked input
// stage ends, before any secret is requested.
func TestSecureRoundQuorumStopsBeforeUnmasking(t *testing.T) {
	runSecureRound(t, []string{"sa-1", "sa-2", "sa-3", "sa-4", "sa-5", "sa-6", "sa-7"}, 6, "quorum not met: 5 of 6 masked inputs")
}

// runSecureRound plays one secure round; failure is the reason the round
// must fail with ("" : it commits).
func runSecureRound(t *testing.T, ids []string, quorum uint32, failure string) {
	h := newHarness(t)
	h.approve(ids...)
	h.start()
	devs := make([]*secureDevice, len(ids))
	for i, id := range ids {
		devs[i] = &secureDevice{agent: h.agent(id), samples: uint64(10 * (i + 1))}
		devs[i].hello(nil)
	}
	h.waitFor("online", func() bool { return h.status().DevicesOnline == len(ids) })
	req := secureReq(1, uint32(len(ids)))
	req.SecureThreshold, req.Quorum = 0.5, quorum
	h.startRun(req)
	dim := h.dimOf()
	base := h.weights(1)
	// dropAt: sa-2 before advertising, sa-4 before its masked input, sa-6 before unmasking.
	dropAt := map[string]secagg.Stage{"sa-2": secagg.StageAdvertiseKeys, "sa-4": secagg.StageMaskedInputCollection, "sa-6": secagg.StageUnmasking}
	live := func(d *secureDevice, s secagg.Stage) bool {
		at, drops := dropAt[d.id]
		return !drops || at > s
	}
	for i, d := range devs {
		d.task = d.agent.task()
		p := d.task.Secagg
		if p == nil || len(p.Participants) != len(ids) || p.Degree != uint32(len(ids)-1) || p.QuantBits != 32 {
			t.Fatalf("task of %s: secagg params %v", d.id, p)
		}
		setup := d.stageMsg(1)
		if len(setup) != SetupBodyLen(len(ids)) {
			t.Fatalf("setup of %d bytes", len(setup))
		}
		cfg := secagg.Config{Round: d.task.RoundId, N: len(ids), Degree: int(p.Degree), Threshold: int(p.Threshold),
			Dim: dim, Clip: float64(p.ClipRange), MaxWeight: 100}
		copy(cfg.RoundSeed[:], p.RoundSeed)
		for _, id := range p.Participants {
			cfg.DeviceKeys = append(cfg.DeviceKeys, wiretest.Public(id))
		}
		want := EncodeSetupBody(100, dim, func() (k [][]byte) {
			for _, pub := range cfg.DeviceKeys {
				k = append(k, pub)
			}
			return k
		}())
		if string(setup) != string(want) {
			t.Fatalf("setup body differs from the enrolled keys and weight bound")
		}
		c, err := secagg.NewClient(cfg, uint32(i), wiretest.Key(d.id), nil)
		if err != nil {
			t.Fatal(err)
		}
		d.client = c
		d.delta = constDelta(dim, float32(i+1)/20)
		if live(d, secagg.StageAdvertiseKeys) {
			msg, err := c.AdvertiseKeys()
			if err != nil {
				t.Fatal(err)
			}
			d.sendStage(1, msg)
		}
	}
	h.advance(31 * time.Second) // stage 0 deadline: sa-2 is silent
	for _, d := range devs {
		if !live(d, secagg.StageShareKeys) {
			continue
		}
		msg, err := d.client.ShareKeys(d.stageMsg(2))
		if err != nil {
			t.Fatal(err)
		}
		d.sendStage(2, msg)
	}
	var sumW, sumV float64
	for _, d := range devs {
		if !live(d, secagg.StageShareKeys) {
			continue
		}
		body := d.stageMsg(3)
		if !live(d, secagg.StageMaskedInputCollection) {
			continue
		}
		masked, err := d.client.MaskedInput(body, d.delta, float64(d.samples))
		if err != nil {
			t.Fatal(err)
		}
		u := &fedgepb.Update{RoundId: d.task.RoundId, DeviceId: d.id, BaseModelHash: d.task.BaseModelHash, SampleCount: d.samples,
			Codec: fedgepb.Codec_CODEC_SECAGG, EncodedDelta: masked, Nonce: d.task.Nonce, Metrics: &fedgepb.TrainMetrics{Loss: 0.5, Accuracy: 0.8}}
		if d.id == "sa-1" {
			// A large masked input travels as a blob, like a plain update.
			snd := h.deviceBlobSender(d.c, d.id)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := snd.Start(ctx); err != nil {
				t.Fatal(err)
			}
			desc, err := snd.Offer(ctx, masked)
			if err != nil {
				t.Fatal(err)
			}
			u.EncodedDelta, u.DeltaBlobId, u.DeltaLength = nil, desc.BlobId, uint64(len(masked))
		}
		if ack := d.ack(d.sendUpdate(u)); !ack.Accepted {
			t.Fatalf("masked input of %s refused: %s", d.id, ack.Reason)
		}
		sumW += float64(d.samples)
		sumV += float64(d.samples) * float64(d.delta[0])
	}
	h.advance(13 * time.Second) // stage 2 deadline (0.7 T): sa-4 is silent
	if strings.HasPrefix(failure, "quorum") {
		h.waitFor("failed round", func() bool { return len(h.status().History) == 1 })
		rec, err := h.st.Round(t.Context(), 1)
		if err != nil || rec.Reason != failure || rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_FAILED {
			t.Fatalf("round 1: %+v, %v; want failed with %q", rec, err, failure)
		}
		for _, d := range devs {
			select {
			case m := <-d.sub.C():
				if p, _ := topics.Parse(m.Topic); p.Kind == topics.KindSecAgg {
					t.Fatalf("%s got a secagg message after the quorum failed", d.id)
				}
			default:
			}
		}
		return
	}
	for _, d := range devs {
		if !live(d, secagg.StageMaskedInputCollection) {
			continue
		}
		msg, err := d.client.ConsistencyCheck(d.stageMsg(4))
		if err != nil {
			t.Fatal(err)
		}
		d.sendStage(4, msg)
	}
	for _, d := range devs {
		if !live(d, secagg.StageMaskedInputCollection) {
			continue
		}
		body := d.stageMsg(5)
		if !live(d, secagg.StageUnmasking) {
			continue
		}
		msg, err := d.client.Unmask(body)
		if err != nil {
			t.Fatal(err)
		}
		d.sendStage(5, msg)
	}
	h.advance(11 * time.Second) // stage 4 deadline (0.9 T): sa-6 is silent
	if failure != "" {
		h.waitFor("failed round", func() bool { return len(h.status().History) == 1 })
		st := h.status()
		if f := st.History[0]; !f.Failed || st.Run.RoundsCommitted != 0 || st.ModelVersion != 1 {
			t.Fatalf("round with too few survivors: %+v, run %+v", f, st.Run)
		}
		rec, err := h.st.Round(t.Context(), 1)
		if err != nil || !strings.HasPrefix(rec.Reason, failure) {
			t.Fatalf("round 1: %v, reason %q; want %q", err, rec.GetReason(), failure)
		}
		return
	}
	h.waitFor("commit", func() bool { st := h.status(); return st.Run != nil && st.Run.RoundsCommitted == 1 })
	hist := h.status().History
	if len(hist) != 1 || int(hist[0].Accepted) != len(ids)-2 {
		t.Fatalf("history %+v, want one round with %d masked inputs", hist, len(ids)-2)
	}
	got := h.weights(2)
	mean := sumV / sumW
	for i := range got {
		if d := float64(got[i]-base[i]) - mean; math.Abs(d) > 1e-5 {
			t.Fatalf("weight %d moved by %v, want the weighted mean %v", i, got[i]-base[i], mean)
		}
	}
}

// TestSecureRestartFailsRound restarts the coordinator during a secure
// round: the round fails with a recorded reason and the next round starts
// with a fresh protocol.
func TestSecureRestartFailsRound(t *testing.T) {
	h := newHarness(t)
	ids := []string{"sr-1", "sr-2", "sr-3"}
	h.approve(ids...)
	h.start()
	ag := make([]*agent, len(ids))
	for i, id := range ids {
		ag[i] = h.agent(id)
		ag[i].hello(nil)
	}
	h.waitFor("online", func() bool { return h.status().DevicesOnline == len(ids) })
	h.startRun(secureReq(2, 3))
	first := ag[0].task()
	h.start() // restart: the protocol state is gone
	h.waitFor("failed round", func() bool { return len(h.status().History) == 1 })
	if f := h.status().History[0]; !f.Failed {
		t.Fatalf("round after restart: %+v, want failed", f)
	}
	for {
		next := ag[0].task()
		if next.RoundId == first.RoundId {
			continue // the republished task of the failed round is not sent; earlier copies may be queued
		}
		if next.RoundId != first.RoundId+1 || next.Secagg == nil {
			t.Fatalf("next task %d with params %v", next.RoundId, next.Secagg)
		}
		break
	}
}

// TestSecureStartRequest checks the admin request validation.
func TestSecureStartRequest(t *testing.T) {
	for _, strat := range []string{"median", "trimmed_mean", "krum", "multikrum", "bulyan"} {
		req := secureReq(1, 4)
		req.Strategy = strat
		_, err := RunConfig(req)
		if !errors.Is(err, admin.ErrBadRequest) || !strings.Contains(err.Error(), `"`+strat+`"`) {
			t.Errorf("%s with secure: %v, want a bad request naming the strategy", strat, err)
		}
	}
	bad := map[string]func(*admin.StartRequest){
		"odd degree": func(r *admin.StartRequest) { r.SecureDegree = 3 },
		"threshold":  func(r *admin.StartRequest) { r.SecureThreshold = 1.5 },
		"clip":       func(r *admin.StartRequest) { r.SecureClipRange = -1 },
		"codec":      func(r *admin.StartRequest) { r.Codec = "int8" },
		"one client": func(r *admin.StartRequest) { r.MinClients = 1 },
		"norm bound": func(r *admin.StartRequest) { r.StrategyConfig = []byte(`{"norm_bound":1}`) },
		"direct":     func(r *admin.StartRequest) { r.StrategyConfig = []byte(`{"secure":{"threshold":0.5}}`) },
		"not secure": func(r *admin.StartRequest) { r.Secure = false },
	}
	for name, mod := range bad {
		req := secureReq(1, 4)
		mod(&req)
		if _, err := RunConfig(req); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("%s: %v, want a bad request", name, err)
		}
	}
	for _, strat := range []string{"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"} {
		req := secureReq(1, 4)
		req.Strategy, req.SecureDegree = strat, 4
		cfg, err := RunConfig(req)
		if err != nil {
			t.Fatalf("%s: %v", strat, err)
		}
		sc := secureOf(cfg)
		if sc == nil || sc.Threshold != 0.6 || sc.Degree != 4 || sc.ClipRange != DefaultSecureClip {
			t.Fatalf("%s: secure section %+v", strat, sc)
		}
		if !slices.Equal(cfg.RequiredFeatures, []string{fedgepb.FeatureSecAgg}) {
			t.Fatalf("%s: required features %v, want only agents that speak secagg", strat, cfg.RequiredFeatures)
		}
	}
	if cfg, err := RunConfig(startReq(1, 1)); err != nil || secureOf(cfg) != nil || len(cfg.RequiredFeatures) != 0 {
		t.Fatalf("plain run: %v, secure %v, required features %v", err, secureOf(cfg), cfg.GetRequiredFeatures())
	}
}

// TestSecureThreshold checks the threshold stays a valid Shamir threshold.
func TestSecureThreshold(t *testing.T) {
	for holders := 2; holders <= 64; holders++ {
		for _, f := range []float64{0.01, 0.3, 0.5, 0.6, 0.99, 1} {
			th := secureThreshold(f, holders)
			if th < 2 || th > holders || 2*th <= holders {
				t.Fatalf("threshold(%v, %d) = %d", f, holders, th)
			}
		}
	}
	if got := secureThreshold(0.6, 10); got != 6 {
		t.Fatalf("threshold(0.6, 10) = %d, want 6", got)
	}
}

// TestSecureRobustHTTP400 asks the running coordinator, over the admin
// HTTP API, for secure aggregation with a robust strategy: a 400 whose
// message names the strategy, and no run starts.
func TestSecureRobustHTTP400(t *testing.T) {
	h := newHarness(t)
	h.start()
	r := secureReq(1, 3)
	r.Strategy = "krum"
	if code, msg := h.postStart(t, r); code != http.StatusBadRequest || !strings.Contains(msg, `strategy \"krum\"`) {
		t.Fatalf("status %d, body %s; want 400 naming krum", code, msg)
	}
	if st := h.status(); st.Run != nil {
		t.Fatalf("a run started: %+v", st.Run)
	}
}
