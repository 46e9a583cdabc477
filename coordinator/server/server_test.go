package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// expectFedAvg returns base + Σ n_i d_i / Σ n_i for constant deltas.
func expectFedAvg(base []float32, samples []uint64, vals []float32) []float32 {
	var num, den float64
	for i := range samples {
		num += float64(samples[i]) * float64(vals[i])
		den += float64(samples[i])
	}
	out := make([]float32, len(base))
	for i, b := range base {
		out[i] = float32(float64(b) + num/den)
	}
	return out
}

func assertClose(t *testing.T, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("len %d, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("weight %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestNormalRun(t *testing.T) {
	h := newHarness(t)
	ids := []string{"dev-a", "dev-b", "dev-c"}
	h.approve(ids...)
	h.start()
	agents := map[string]*agent{}
	for _, id := range ids {
		agents[id] = h.agent(id)
		agents[id].hello(nil)
	}
	h.waitFor("devices online", func() bool { return h.status().DevicesOnline == 3 })
	run := h.startRun(startReq(2, 3))
	if run.State != "running" || run.Model != testModel || run.Strategy != "fedavg" {
		t.Fatalf("run %+v", run)
	}
	dim := h.dimOf()
	samples := []uint64{10, 30, 60}
	vals := []float32{0.1, -0.2, 0.05}
	for r := 1; r <= 2; r++ {
		var base uint64
		for i, id := range ids {
			task := agents[id].task()
			if task.Kind != fedgepb.TaskKind_TASK_KIND_TRAIN || task.ModelId != testModel || len(task.Nonce) == 0 {
				t.Fatalf("round %d task %+v", r, task)
			}
			base = task.ModelVersion
			id := agents[id].sendUpdate(agents[id].update(task, samples[i], constDelta(dim, vals[i])))
			if ack := agents[ids[i]].ack(id); !ack.Accepted || ack.Reason != "" {
				t.Fatalf("round %d: %s not accepted: %+v", r, ids[i], ack)
			}
		}
		want := expectFedAvg(h.weights(base), samples, vals)
		h.waitFor("commit", func() bool { return h.status().ModelVersion == base+1 })
		assertClose(t, h.weights(base+1), want)
	}
	h.waitFor("run done", func() bool { return h.status().Run.State == "done" })
	st := h.status()
	if st.Schema != admin.StatusSchema || len(st.History) != 2 || st.Run.RoundsCommitted != 2 || st.Round != nil {
		t.Fatalf("status %+v", st)
	}
	for _, e := range st.History {
		if e.Failed || e.Accepted != 3 || e.Selected != 3 || e.TrainAccuracy != 0.8 {
			t.Fatalf("history %+v", e)
		}
	}
	// The retained manifest is the last version, signed by the coordinator.
	c, err := h.bus.Connect(bgAdmin("reader"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(context.Background(), topics.Manifest(testFleet))
	if err != nil {
		t.Fatal(err)
	}
	m := <-sub.C()
	pub := h.key.Public().(ed25519.PublicKey)
	env, err := wire.Accept(m.Topic, m.Payload, wire.Limits{}, wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: pub}))
	if err != nil {
		t.Fatal(err)
	}
	man := env.Msg.(*fedgepb.ModelManifest)
	if man.Version != 3 || man.ParamCount != uint64(dim) || man.WeightsLength != uint64(4*dim) || len(man.WasmHash) != 32 {
		t.Fatalf("manifest %+v", man)
	}
	if got := metricValue(t, h.reg, "fedge_updates_accepted_total", ""); got != 6 {
		t.Fatalf("updates accepted metric %v, want 6", got)
	}
	if got := metricValue(t, h.reg, "fedge_rounds_committed_total", ""); got != 2 {
		t.Fatalf("rounds committed metric %v, want 2", got)
	}
}

func TestStartRunRefusals(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx := context.Background()
	cases := []struct {
		name string
		req  admin.StartRequest
		want error
	}{
		{"no model", admin.StartRequest{}, admin.ErrBadRequest},
		{"unknown model", admin.StartRequest{Model: "nosuch"}, admin.ErrNotFound},
		{"unknown strategy", admin.StartRequest{Model: testModel, Strategy: "fedmagic"}, admin.ErrBadRequest},
		{"secure", admin.StartRequest{Model: testModel, Secure: true}, admin.ErrBadRequest},
		{"fraction", admin.StartRequest{Model: testModel, Fraction: 1.5}, admin.ErrBadRequest},
		{"codec", admin.StartRequest{Model: testModel, Codec: "zip"}, admin.ErrBadRequest},
		{"max below min", admin.StartRequest{Model: testModel, MinClients: 3, MaxClients: 2}, admin.ErrBadRequest},
		{"target without eval", admin.StartRequest{Model: testModel, TargetAccuracy: 0.9}, admin.ErrBadRequest},
		{"server eval without test set", admin.StartRequest{Model: testModel, ServerEval: true}, admin.ErrBadRequest},
		{"bad strategy config", admin.StartRequest{Model: testModel, StrategyConfig: []byte(`{"momentum": "x"}`)}, admin.ErrBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := h.srv.StartRun(ctx, "test", c.req); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	h.startRun(startReq(1, 1))
	if _, err := h.srv.StartRun(ctx, "test", startReq(1, 1)); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("second run: %v", err)
	}
	if _, err := h.srv.Rollback(ctx, "test", 1); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("rollback during a run: %v", err)
	}
	if _, err := h.srv.StopRun(ctx, "test", "enough"); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st.Run.State != "stopped" {
		t.Fatalf("after stop: %+v", st.Run)
	}
	if _, err := h.srv.StopRun(ctx, "test", ""); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("stop without run: %v", err)
	}
}

// TestRejections sends every kind of bad update; each is refused and
// counted under its reason.
func TestRejections(t *testing.T) {
	h := newHarness(t)
	h.cfgHook = func(c *Config) { c.MaxDeltaBytes = 1 << 20 }
	ags := h.online("dev-1", "dev-2")
	a1, a2 := ags[0], ags[1]
	h.startRun(startReq(3, 2))
	dim := h.dimOf()
	// Round 1 completes normally; its updates are kept for replays.
	t1a, t1b := a1.task(), a2.task()
	old1 := a1.update(t1a, 10, constDelta(dim, 0.01))
	a1.ack(a1.sendUpdate(old1))
	a2.ack(a2.sendUpdate(a2.update(t1b, 10, constDelta(dim, 0.01))))
	// Round 2 completes too, so round 1 is older than the previous round.
	t2a, t2b := a1.task(), a2.task()
	old2 := a1.update(t2a, 10, constDelta(dim, 0.01))
	a1.ack(a1.sendUpdate(old2))
	a2.ack(a2.sendUpdate(a2.update(t2b, 10, constDelta(dim, 0.01))))
	task := a1.task() // round 3 training
	a2.task()

	inject := injector(t, h)
	machineCases := []struct {
		name   string
		mutate func(u *fedgepb.Update)
		reason string
	}{
		{"replay of an earlier round", func(u *fedgepb.Update) { proto.Reset(u); proto.Merge(u, old1) }, round.ReasonReplay},
		{"earlier round's nonce", func(u *fedgepb.Update) { u.Nonce = old2.Nonce }, round.ReasonBadNonce},
		{"stale base model", func(u *fedgepb.Update) { u.BaseModelHash = t1a.BaseModelHash }, round.ReasonStaleBase},
		{"NaN weights", func(u *fedgepb.Update) {
			d := constDelta(dim, 0.1)
			d[3] = float32(math.NaN())
			u.EncodedDelta = rawF32(dim, d)
		}, round.ReasonNonFinite},
		{"Inf weights", func(u *fedgepb.Update) {
			d := constDelta(dim, 0.1)
			d[0] = float32(math.Inf(1))
			u.EncodedDelta = rawF32(dim, d)
		}, round.ReasonNonFinite},
		{"wrong shape", func(u *fedgepb.Update) { u.EncodedDelta = encodeF32(t, constDelta(dim+1, 0.1)) }, round.ReasonWrongShape},
		{"truncated delta", func(u *fedgepb.Update) { u.EncodedDelta = u.EncodedDelta[:len(u.EncodedDelta)-4] }, round.ReasonBadEncoding},
		{"codec mismatch", func(u *fedgepb.Update) { u.Codec = fedgepb.Codec_CODEC_INT8 }, round.ReasonBadEncoding},
		{"oversized delta blob", func(u *fedgepb.Update) {
			u.EncodedDelta, u.DeltaBlobId, u.DeltaLength = nil, make([]byte, 32), 2<<20
		}, ReasonTooLarge},
	}
	for _, c := range machineCases {
		t.Run(c.name, func(t *testing.T) {
			before := h.status().Rejections
			u := a1.update(task, 10, constDelta(dim, 0.1))
			c.mutate(u)
			id := a1.sendUpdate(u)
			ack := a1.ack(id)
			if ack.Accepted || ack.Reason != c.reason {
				t.Fatalf("ack %+v, want refused %q", ack, c.reason)
			}
			if got := h.status().Rejections[c.reason]; got != before[c.reason]+1 {
				t.Fatalf("%s counted %d, want %d", c.reason, got, before[c.reason]+1)
			}
			if got := metricValue(t, h.reg, "fedge_updates_rejected_total", c.reason); got < 1 {
				t.Fatalf("metric for %s is %v", c.reason, got)
			}
		})
	}
	wireCases := []struct {
		name   string
		send   func()
		reason wire.Reason
	}{
		{"forged signature", func() {
			inject(topics.DeviceOut(testFleet, "dev-1", topics.KindUpdate), seal(t, h, wireKey("forger"), "dev-1", a1.update(task, 10, constDelta(dim, 9))))
		}, wire.ReasonBadSignature},
		{"unknown device", func() {
			inject(topics.DeviceOut(testFleet, "dev-9", topics.KindUpdate), seal(t, h, wireKey("dev-9"), "dev-9", withDevice(a1.update(task, 10, constDelta(dim, 9)), "dev-9")))
		}, wire.ReasonUnknownSender},
		{"device signs as another", func() {
			inject(topics.DeviceOut(testFleet, "dev-1", topics.KindUpdate), seal(t, h, wireKey("dev-2"), "dev-1", a1.update(task, 10, constDelta(dim, 9))))
		}, wire.ReasonBadSignature},
		{"device publishes on another's topic", func() {
			inject(topics.DeviceOut(testFleet, "dev-1", topics.KindUpdate), seal(t, h, wireKey("dev-2"), "dev-2", withDevice(a1.update(task, 10, constDelta(dim, 9)), "dev-2")))
		}, wire.ReasonSenderMismatch},
		{"payload names another device", func() {
			inject(topics.DeviceOut(testFleet, "dev-2", topics.KindUpdate), seal(t, h, wireKey("dev-2"), "dev-2", a1.update(task, 10, constDelta(dim, 9))))
		}, wire.ReasonSenderMismatch},
		{"oversized payload", func() {
			u := a1.update(task, 10, constDelta(dim, 0.1))
			u.EncodedDelta = make([]byte, 300<<10)
			inject(topics.DeviceOut(testFleet, "dev-1", topics.KindUpdate), seal(t, h, wireKey("dev-1"), "dev-1", u))
		}, wire.ReasonTooLarge},
		{"garbage", func() { inject(topics.DeviceOut(testFleet, "dev-1", topics.KindUpdate), []byte("not a protobuf")) }, wire.ReasonMalformed},
	}
	for _, c := range wireCases {
		t.Run(c.name, func(t *testing.T) {
			before := h.srv.WireCounters().Count(c.reason)
			c.send()
			h.waitFor(string(c.reason), func() bool { return h.srv.WireCounters().Count(c.reason) == before+1 })
			if got := metricValue(t, h.reg, "fedge_messages_rejected_total", string(c.reason)); got < 1 {
				t.Fatalf("metric for %s is %v", c.reason, got)
			}
		})
	}
	// None of it reached the aggregate: round 3 still waits for both.
	if st := h.status(); st.Round.RoundID != task.RoundId || st.Round.Accepted != 0 || st.Round.Phase != "training" {
		t.Fatalf("round after rejections %+v", st.Round)
	}
	// The genuine update is still accepted.
	if ack := a1.ack(a1.sendUpdate(a1.update(task, 10, constDelta(dim, 0.1)))); !ack.Accepted {
		t.Fatalf("genuine update refused: %+v", ack)
	}
}

func withDevice(u *fedgepb.Update, id string) *fedgepb.Update {
	u.DeviceId = id
	return u
}

func wireKey(name string) ed25519.PrivateKey { return wiretestKey(name) }

// seal signs an update as sender with key, whatever the key's owner.
func seal(t *testing.T, h *harness, key ed25519.PrivateKey, sender string, u *fedgepb.Update) []byte {
	t.Helper()
	raw, err := wire.Seal(key, sender, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, fixLen(u), h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// injector publishes raw bytes on any topic, as a broker without ACLs
// would let a device do.
func injector(t *testing.T, h *harness) func(topic string, raw []byte) {
	c, err := h.bus.Connect(bgAdmin("injector"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return func(topic string, raw []byte) {
		if err := c.Publish(context.Background(), topic, raw, transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
