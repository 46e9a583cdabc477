package fleet

import (
	"container/heap"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/behavior"
	"github.com/fedge-dev/fedge/simulations/scenario"
)

func TestStartRequest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		yaml       string
		selected   int
		wantQuorum uint32
		wantTarget float64
	}{
		{"quorum 1 commits what arrived", "name: a\nselection: {fraction: 1, min_clients: 2, quorum: 1}\n", 10, 1, 0},
		{"quorum 0.8 of 10", "name: a\nselection: {fraction: 1, min_clients: 2, quorum: 0.8}\n", 10, 8, 0},
		{"quorum rounds up", "name: a\nselection: {fraction: 1, min_clients: 2, quorum: 0.25}\n", 10, 3, 0},
		{"stop at target", "name: a\ntarget_accuracy: 0.9\nstop_at_target: true\n", 10, 1, 0.9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := scenario.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			req, err := startRequest(sc, "mlp", tc.selected)
			if err != nil {
				t.Fatal(err)
			}
			if req.Quorum != tc.wantQuorum || req.TargetAccuracy != tc.wantTarget || !req.ServerEval || req.Seed != sc.Seed {
				t.Errorf("request %+v: quorum %d target %v, want %d %v", req, req.Quorum, req.TargetAccuracy, tc.wantQuorum, tc.wantTarget)
			}
			if _, err := server.RunConfig(req); err != nil {
				t.Errorf("the coordinator refuses the request: %v", err)
			}
			var cfg server.StrategyConfig
			if err := json.Unmarshal(req.StrategyConfig, &cfg); err != nil || cfg.ServerLR != sc.Strategy.ServerLR {
				t.Errorf("strategy config %s: %v", req.StrategyConfig, err)
			}
		})
	}
}

func TestExpectedSelected(t *testing.T) {
	for _, tc := range []struct {
		clients, min, max int
		fraction          float64
		want              int
	}{
		{100, 10, 0, 0.1, 10},
		{10, 1, 0, 0.25, 3},
		{50, 20, 0, 0.4, 20},
		{10000, 50, 0, 0.01, 100},
		{100, 1, 5, 0.5, 5},
	} {
		sc := scenario.Default()
		sc.Clients, sc.Selection.MinClients, sc.Selection.MaxClients, sc.Selection.Fraction = tc.clients, tc.min, tc.max, tc.fraction
		f := &Fleet{sc: sc}
		if got := f.expectedSelected(); got != tc.want {
			t.Errorf("%+v: %d selected, want %d", tc, got, tc.want)
		}
	}
}

// TestHeldQueueOrder: updates leave by due time, ties by device index,
// whatever order they were taken in.
func TestHeldQueueOrder(t *testing.T) {
	t0 := time.Unix(100, 0)
	var q heldQueue
	for _, h := range []held{
		{at: t0.Add(2 * time.Second), dev: 1}, {at: t0, dev: 7}, {at: t0, dev: 3},
		{at: t0.Add(time.Second), dev: 0}, {at: t0, dev: 5},
	} {
		heap.Push(&q, h)
	}
	want := []int{3, 5, 7, 0, 1}
	for i, w := range want {
		h := heap.Pop(&q).(held)
		if h.dev != w {
			t.Fatalf("pop %d: device %d, want %d", i, h.dev, w)
		}
	}
}

// attackFleet is a fleet of two devices, device 1 attacking with a.
func attackFleet(t *testing.T, a behavior.Attack) *Fleet {
	t.Helper()
	f := &Fleet{track: newTracker(), limits: wire.DefaultLimits(),
		profile: behavior.Profile{Seed: 1, SpeedMedian: 1, Availability: 1, AttackFraction: 0.5, Attack: a, AttackScale: 10}}
	f.devices = []device{{key: seededKey(1, "device", 0)}, {key: seededKey(1, "device", 1), attack: a}}
	return f
}

func sealUpdate(t *testing.T, key ed25519.PrivateKey, delta []float32) (*wire.Envelope, *fedgepb.Update, []byte) {
	t.Helper()
	enc, err := codec.NewEncoder(codec.Spec{ID: codec.Float32}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := enc.Encode(nil, delta)
	if err != nil {
		t.Fatal(err)
	}
	u := &fedgepb.Update{RoundId: 3, DeviceId: "d000001", BaseModelHash: make([]byte, 32), SampleCount: 10,
		Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: b, DeltaLength: uint64(len(b)), Nonce: make([]byte, 16)}
	env, err := wire.SealEnvelope(key, "d000001", fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	opened, err := wire.Open(raw, wire.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return opened, opened.Msg.(*fedgepb.Update), raw
}

func TestCorrupt(t *testing.T) {
	delta := []float32{1, -2, 0.5}
	for _, tc := range []struct {
		attack behavior.Attack
		want   []float32 // nil: only checked to differ (noise)
	}{
		{behavior.SignFlip, []float32{-10, 20, -5}},
		{behavior.Scale, []float32{10, -20, 5}},
		{behavior.Noise, nil},
		{behavior.LabelFlip, []float32{1, -2, 0.5}},
	} {
		t.Run(tc.attack.String(), func(t *testing.T) {
			f := attackFleet(t, tc.attack)
			key := f.devices[1].key
			env, u, raw := sealUpdate(t, key, delta)
			msgID := append([]byte(nil), env.MessageID...)
			out, err := f.corrupt(1, env, u, raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := wire.Open(out, wire.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if err := wire.Verify(got, key.Public().(ed25519.PublicKey)); err != nil {
				t.Fatalf("corrupted update does not verify with the device key: %v", err)
			}
			if string(got.MessageID) != string(msgID) {
				t.Error("the message id changed: the agent could not match the ack")
			}
			d := make([]float32, len(delta))
			if _, err := codec.Decode(d, got.Msg.(*fedgepb.Update).EncodedDelta); err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if d[0] == delta[0] && d[1] == delta[1] {
					t.Errorf("noise left the delta %v unchanged", d)
				}
				return
			}
			for i := range d {
				if math.Abs(float64(d[i]-tc.want[i])) > 1e-6 {
					t.Fatalf("delta %v, want %v", d, tc.want)
				}
			}
		})
	}
	t.Run("honest device untouched", func(t *testing.T) {
		f := attackFleet(t, behavior.SignFlip)
		env, u, raw := sealUpdate(t, f.devices[0].key, delta)
		out, err := f.corrupt(0, env, u, raw)
		if err != nil || string(out) != string(raw) {
			t.Errorf("honest update changed (err %v)", err)
		}
	})
	t.Run("blob delta refused", func(t *testing.T) {
		f := attackFleet(t, behavior.SignFlip)
		env, u, raw := sealUpdate(t, f.devices[1].key, delta)
		u.EncodedDelta, u.DeltaBlobId = nil, make([]byte, 32)
		if _, err := f.corrupt(1, env, u, raw); err == nil {
			t.Error("a blob delta was corrupted without error")
		}
	})
}

// FuzzCorrupt feeds arbitrary encoded deltas to an attacker: it must fail
// cleanly or produce an update that still verifies.
func FuzzCorrupt(f *testing.F) {
	enc, _ := codec.NewEncoder(codec.Spec{ID: codec.Float32}, nil)
	good, _ := enc.Encode(nil, []float32{1, 2, 3})
	for _, seed := range [][]byte{good, nil, {1}, {1, 1, 255, 255, 255, 255}, {1, 1, 2, 0, 0, 0, 1, 2, 3}, {9, 9, 1, 0, 0, 0, 0, 0, 0, 0}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fl := attackFleet(t, behavior.Scale)
		env, u, raw := sealUpdate(t, fl.devices[1].key, []float32{1})
		u.EncodedDelta = b
		out, err := fl.corrupt(1, env, u, raw)
		if err != nil {
			return
		}
		got, err := wire.Open(out, wire.DefaultLimits())
		if err != nil {
			return // e.g. a delta the wire layer bounds
		}
		if err := wire.Verify(got, fl.devices[1].key.Public().(ed25519.PublicKey)); err != nil {
			t.Fatalf("corrupted update does not verify: %v", err)
		}
	})
}

func TestFlippedLabels(t *testing.T) {
	ds, err := data.NewDataset([]float32{0, 1, 2, 3}, []int{0, 9, 3, 5}, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	src := flipped{ds}
	for i, want := range []int{9, 0, 6, 4} {
		x, y := src.Sample(i)
		if y != want || x[0] != float32(i) {
			t.Errorf("sample %d: label %d features %v, want label %d", i, y, x, want)
		}
	}
}

func TestMNISTDirFromEnv(t *testing.T) {
	t.Setenv("FEDGE_MNIST_DIR", "/some/where")
	if d, err := MNISTDir(); err != nil || d != "/some/where" {
		t.Errorf("MNISTDir() = %q, %v", d, err)
	}
}

func TestRunRefusesWhatItCannotDo(t *testing.T) {
	for _, yaml := range []string{
		"name: a\nstrategy: {name: fedavg, dp_noise_multiplier: 1, dp_clip: 1}\nsecure: {enabled: true}\n",
		"name: a\ndataset: csv:/x.csv\n",
	} {
		sc, err := scenario.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(t.Context(), sc, Options{Out: t.TempDir(), MNISTDir: t.TempDir()}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q: %v, want ErrUnsupported", yaml, err)
		}
	}
}

const dpYAML = `
name: dp-small
seed: 3
model: logreg
transport: memory
clock: virtual
clients: 20
rounds: 2
test_samples: 1000
deadline: 10m
partition: {kind: iid}
selection: {fraction: 0.15, min_clients: 3, quorum: 1.0}
train: {epochs: 1, batch_size: 10, learning_rate: 0.05}
strategy: {name: fedavg, dp_noise_multiplier: 0.8, dp_clip: 0.5, dp_delta: 1e-4}
`

// TestDPScenario runs a small DP-FedAvg scenario: it completes, the
// coordinator charges every committed round, and summary.json carries the
// final ε.
func TestDPScenario(t *testing.T) {
	sc, err := scenario.Parse([]byte(dpYAML))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	res, err := Run(t.Context(), sc, Options{Out: out, MNIST: mnistSets(t), Stall: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	d := res.DP
	if d == nil || d.NoiseMultiplier != 0.8 || d.Clip != float64(float32(0.5)) || d.SamplingRate != 0.15 || d.Delta != 1e-4 {
		t.Fatalf("dp %+v", d)
	}
	// The run ends after sc.Rounds committed rounds; each is charged.
	if int(d.RoundsCharged) != sc.Rounds || !(d.Epsilon > 0) {
		t.Fatalf("dp %+v after %d rounds", d, sc.Rounds)
	}
	want, err := server.DPAccountant(&server.DPConfig{NoiseMultiplier: 0.8, SamplingRate: 0.15}, d.RoundsCharged)
	if err != nil {
		t.Fatal(err)
	}
	if eps, _, err := want.Epsilon(d.Delta); err != nil || math.Abs(eps-d.Epsilon) > 1e-9 {
		t.Fatalf("epsilon %v, accountant says %v (%v)", d.Epsilon, eps, err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum DPSummary
	if err := json.Unmarshal(raw, &sum); err != nil || sum.DP == nil || sum.DP.Epsilon != d.Epsilon || sum.Scenario != "dp-small" {
		t.Fatalf("summary.json (%v):\n%s", err, raw)
	}
}

func TestTrackerWaitIdle(t *testing.T) {
	tr := newTracker()
	if !tr.waitIdle(time.Millisecond) {
		t.Fatal("an empty tracker is not idle")
	}
	tr.update(func() { tr.tasks[1] = 1; tr.awaiting[devRound{2, 1}] = true })
	if tr.waitIdle(10 * time.Millisecond) {
		t.Fatal("idle with work in hand")
	}
	go func() {
		time.Sleep(5 * time.Millisecond)
		tr.update(func() { delete(tr.tasks, 1) })
		time.Sleep(5 * time.Millisecond)
		tr.update(func() { delete(tr.awaiting, devRound{2, 1}) })
	}()
	if !tr.waitIdle(time.Second) {
		t.Fatal("not idle after the work was done")
	}
	tr.update(func() { tr.installs[3] = 2 })
	if tasks, acks, installs := tr.what(); tasks != 0 || acks != 0 || installs != 1 {
		t.Errorf("what() = %d, %d, %d", tasks, acks, installs)
	}
	tr.forget()
	if b, _ := tr.busy(); b {
		t.Error("busy after forget")
	}
}
