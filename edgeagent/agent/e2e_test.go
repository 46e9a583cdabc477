package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// referenceDelta trains the same model on the same data directly with the
// runtime and returns local - global.
func referenceDelta(t *testing.T, host *runtime.Host, wasm, weights []byte, task *fedgepb.RoundTask, src data.Source) []float32 {
	t.Helper()
	ctx := context.Background()
	mod, err := host.Compile(ctx, wasm)
	must(t, err)
	in, err := mod.Instantiate(ctx, runtime.Options{MaxBatch: int(task.Train.BatchSize)})
	must(t, err)
	defer in.Close(ctx)
	global, err := DecodeWeights(weights)
	must(t, err)
	must(t, in.SetParams(ctx, global))
	_, err = in.TrainEpochs(ctx, src, runtime.TrainConfig{Epochs: int(task.Train.Epochs), BatchSize: int(task.Train.BatchSize),
		LR: task.Train.LearningRate, Seed: shuffleSeed(task.Train.Seed, task.RoundId), Global: global})
	must(t, err)
	local, err := in.Params(ctx)
	must(t, err)
	for i := range local {
		local[i] -= global[i]
	}
	return local
}

func TestEndToEndTrainAndAck(t *testing.T) {
	for _, tc := range []struct {
		name        string
		inlineLimit int
	}{{"inline delta", 0}, {"delta as blob", 1024}} {
		t.Run(tc.name, func(t *testing.T) {
			bus := memory.NewBus(memory.Config{}, nil)
			c := newFakeCoordinator(t, bus)
			host := newHost(t)
			src := synthetic(t, 96, 1)
			dev := newDevice(t, c, host, "dev-1", src, func(o *Options) { o.InlineLimit = tc.inlineLimit })
			wasm, weights := logregModel(t, host)
			m1 := c.model(1, wasm, weights)
			c.announce(m1)
			dev.start(t, bus)
			eventually(t, "model v1 installed", func() bool { return dev.activeVersion() == 1 })

			task := trainTask(5, m1, 42)
			c.sendTask(dev.id, task)
			eventually(t, "update acked", func() bool { return dev.agent.Stats().Acked == 1 })

			res := c.resultsSnapshot()
			if len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			u := res[0].Msg.(*fedgepb.Update)
			if u.RoundId != 5 || u.DeviceId != "dev-1" || !bytes.Equal(u.Nonce, task.Nonce) ||
				!bytes.Equal(u.BaseModelHash, m1.WeightsHash) || u.SampleCount != 96 || u.Codec != fedgepb.Codec_CODEC_FLOAT32 {
				t.Fatalf("update fields %+v", u)
			}
			if (len(u.DeltaBlobId) > 0) != (tc.inlineLimit > 0) {
				t.Fatalf("blob id %x with inline limit %d", u.DeltaBlobId, tc.inlineLimit)
			}
			want := referenceDelta(t, host, wasm, weights, task, src)
			got := c.deltas[string(res[0].MessageID)]
			if len(got) != len(want) {
				t.Fatalf("delta has %d params, want %d", len(got), len(want))
			}
			var norm float64
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("delta[%d] = %v, reference %v (training is not deterministic)", i, got[i], want[i])
				}
				norm += float64(got[i]) * float64(got[i])
			}
			if norm == 0 {
				t.Fatal("zero delta: nothing was trained")
			}
			if ps, _ := dev.state.Pending(); len(ps) != 0 {
				t.Fatalf("%d pending after ack", len(ps))
			}
			if done, _ := dev.state.Done(); len(done) != 1 || done[0] != 5 {
				t.Fatalf("done rounds %v", done)
			}
			// The same task again is never retrained.
			c.sendTask(dev.id, task)
			eventually(t, "repeat task ignored", func() bool { return dev.agent.Stats().Ignored["task"] == 1 })
			if st := dev.agent.Stats(); st.TasksRun != 1 {
				t.Fatalf("%d tasks run", st.TasksRun)
			}
		})
	}
}

func TestEndToEndEvaluate(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-e", synthetic(t, 50, 2), nil)
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	c.announce(m1)
	dev.start(t, bus)
	eventually(t, "model installed", func() bool { return dev.activeVersion() == 1 })
	task := &fedgepb.RoundTask{RoundId: 9, Kind: fedgepb.TaskKind_TASK_KIND_EVALUATE, ModelId: m1.ModelId, ModelVersion: 1,
		BaseModelHash: m1.WeightsHash, Nonce: nonce(9), DeadlineUnixMs: 1 << 50,
		Evaluate: &fedgepb.EvaluateConfig{BatchSize: 32, MaxSamples: 40}}
	c.sendTask(dev.id, task)
	eventually(t, "evaluation acked", func() bool { return dev.agent.Stats().Acked == 1 })
	r := c.resultsSnapshot()[0].Msg.(*fedgepb.EvaluateResult)
	// Zero weights: uniform scores, loss ln(10), accuracy of class 0.
	if r.SampleCount != 40 || math.Abs(r.Loss-math.Log(10)) > 1e-4 || !bytes.Equal(r.Nonce, task.Nonce) {
		t.Fatalf("evaluation %+v", r)
	}
}

func TestBadManifestsKeepCurrentModel(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-b", synthetic(t, 20, 3), nil)
	wasm, weights := logregModel(t, host)
	c.announce(c.model(2, wasm, weights))
	dev.start(t, bus)
	eventually(t, "model v2 installed", func() bool { return dev.activeVersion() == 2 })

	_, otherKey, _ := ed25519.GenerateKey(nil)
	w3 := append([]byte(nil), weights...)
	w3[0] = 1
	cases := []struct {
		name    string
		publish func()
		counted func() bool
	}{
		{"manifest signed by another key", func() {
			m := c.model(3, wasm, w3)
			must(t, wire.SignManifest(m, otherKey))
			c.announce(m)
		}, func() bool { return dev.agent.Counters().Count(wire.ReasonBadSignature) == 1 }},
		{"envelope signed by another key", func() {
			m := c.model(3, wasm, w3)
			raw, err := wire.Seal(otherKey, wire.CoordinatorID, fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, m, time.Now())
			must(t, err)
			must(t, c.tr.Publish(c.ctx, topics.Manifest(fleet), raw, transport.PublishOptions{Retain: true}))
		}, func() bool { return dev.agent.Counters().Count(wire.ReasonBadSignature) == 2 }},
		{"weights length differs from the manifest", func() {
			m := c.model(3, wasm, w3)
			short := w3[:len(w3)-4]
			c.offer(short)
			m.WeightsHash, m.WeightsLength, m.ParamCount = sha(short), uint64(len(w3)), uint64(len(w3)/4)
			must(t, wire.SignManifest(m, c.key))
			c.announce(m)
		}, func() bool { return dev.agent.Stats().Ignored["model"] == 1 }},
		{"parameter count differs from the module", func() {
			long := append(append([]byte(nil), w3...), 0, 0, 0, 0)
			c.announce(c.model(4, wasm, long))
		}, func() bool { return dev.agent.Stats().Ignored["model"] == 2 }},
		{"module that does not compile", func() {
			c.announce(c.model(5, []byte("\x00asm garbage"), w3))
		}, func() bool { return dev.agent.Stats().Ignored["model"] == 3 }},
		{"older version", func() {
			c.announce(c.model(1, wasm, w3))
		}, func() bool { return dev.agent.Stats().Ignored["manifest"] == 1 }},
	}
	for _, tc := range cases {
		tc.publish()
		eventually(t, tc.name+" rejected and counted", tc.counted)
		if v := dev.activeVersion(); v != 2 {
			t.Fatalf("%s: active model v%d, want v2", tc.name, v)
		}
	}
	// A good newer version is still accepted afterwards; v2 stays loadable.
	c.announce(c.model(6, wasm, w3))
	eventually(t, "model v6 installed", func() bool { return dev.activeVersion() == 6 })
	prev, err := dev.models.Load(2)
	must(t, err)
	if !bytes.Equal(prev.Weights, weights) {
		t.Fatal("previous version not kept")
	}
}

func TestTaskWaitsForItsModel(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-w", synthetic(t, 32, 4), nil)
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	dev.start(t, bus)
	eventually(t, "hello", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) == 1 })
	c.sendTask(dev.id, trainTask(3, m1, 1)) // before any manifest
	eventually(t, "task persisted", func() bool { tk, _ := dev.state.Task(); return tk != nil })
	c.announce(m1)
	eventually(t, "update acked", func() bool { return dev.agent.Stats().Acked == 1 })
}

// TestDroppedTaskIsReported: a task whose base model fails its checks is
// given up at once and the coordinator is told, with the round and why.
func TestDroppedTaskIsReported(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-d", synthetic(t, 32, 5), nil)
	_, weights := logregModel(t, host)
	bad := c.model(1, []byte("\x00asm garbage"), weights)
	dev.start(t, bus)
	eventually(t, "hello", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) == 1 })
	c.sendTask(dev.id, trainTask(9, bad, 1))
	c.announce(bad)
	var got *fedgepb.Status
	eventually(t, "dropped status", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.statuses {
			if s.State == fedgepb.DeviceState_DEVICE_STATE_DROPPED {
				got = s
				return true
			}
		}
		return false
	})
	if got.DeviceId != dev.id || got.RoundId != 9 || !strings.Contains(got.Reason, "failed its checks") {
		t.Fatalf("status %v, want DROPPED of round 9 because its model failed its checks", got)
	}
	if st := dev.agent.Stats(); st.TasksDropped != 1 || st.TasksRun != 0 {
		t.Fatalf("stats %+v, want one task dropped and none run", st)
	}
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abc", 3, "abc"}, {"abcd", 3, "abc"}, {"aé", 2, "a"}, {"aéb", 3, "aé"}, {"é", 1, ""},
	} {
		if got := truncateUTF8(tc.in, tc.n); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
