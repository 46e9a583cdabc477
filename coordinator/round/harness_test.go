package round

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// testDim is the parameter count of the test model.
const testDim = 4

// fedAvg is a plain sample-weighted FedAvg for the tests.
type fedAvg struct {
	sum   []float64
	total uint64
}

func newFedAvg(_ *fedgepb.RunConfig, _ uint64, dim int) (Aggregator, error) {
	return &fedAvg{sum: make([]float64, dim)}, nil
}

func (a *fedAvg) Add(_ string, delta []float32, samples uint64) error {
	if len(delta) != len(a.sum) {
		return fmt.Errorf("delta of %d, want %d", len(delta), len(a.sum))
	}
	for i, d := range delta {
		a.sum[i] += float64(samples) * float64(d)
	}
	a.total += samples
	return nil
}

func (a *fedAvg) Finish(global []float32) ([]float32, error) {
	if a.total == 0 {
		return nil, fmt.Errorf("no updates")
	}
	out := make([]float32, len(global))
	for i := range out {
		out[i] = global[i] + float32(a.sum[i]/float64(a.total))
	}
	return out, nil
}

// hashSigner "signs" with a hash so transcripts show a signature.
type hashSigner struct{}

func (hashSigner) SignManifest(m *fedgepb.ModelManifest) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	h := sha256.Sum256(b)
	m.Signature = h[:8]
	return nil
}

func testConfig() Config {
	return Config{NewAggregator: newFedAvg, Signer: hashSigner{}, NonceKey: []byte("test-nonce-key")}
}

// initialModel is a version-0 base model the machine registers at StartRun.
func initialModel() *store.ModelVersion {
	return &store.ModelVersion{ModelId: "mlp", Weights: EncodeWeights([]float32{0.5, -0.5, 0.25, 0})}
}

// delta is a device's deterministic training result for a round.
func delta(device string, round uint64) []float32 {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", device, round)))
	out := make([]float32, testDim)
	for i := range out {
		out[i] = (float32(h[i]) - 128) / 1024
	}
	return out
}

// harness is a driver for tests: it persists every Ready to a memory store
// before "publishing" it (recording the tasks devices were sent), and
// writes a transcript.
type harness struct {
	t      *testing.T
	cfg    Config
	st     store.Store
	m      *Machine
	now    int64
	out    strings.Builder
	tasks  map[string]*fedgepb.RoundTask // last task each device received
	online map[string]*fedgepb.Capabilities
	msgSeq int
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, cfg: testConfig(), st: store.NewMemory(), tasks: map[string]*fedgepb.RoundTask{},
		online: map[string]*fedgepb.Capabilities{}}
	m, err := New(h.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

func (h *harness) step(ev Event) error {
	fmt.Fprintf(&h.out, "> %s\n", FormatEvent(ev))
	switch e := ev.(type) {
	case Tick:
		h.now = e.NowUnixMs
	case DeviceOnline:
		h.online[e.Device] = e.Caps
	case DeviceOffline:
		delete(h.online, e.Device)
	}
	err := h.m.Step(ev)
	if err != nil {
		fmt.Fprintf(&h.out, "error: %v\n", err)
	}
	h.flush()
	return err
}

// mustStep steps and fails the test on an error.
func (h *harness) mustStep(ev Event) {
	h.t.Helper()
	if err := h.step(ev); err != nil {
		h.t.Fatalf("%s: %v", FormatEvent(ev), err)
	}
}

// flush persists and publishes the machine's Ready, checking that every
// positive ack follows the persisted update it acknowledges.
func (h *harness) flush() {
	h.t.Helper()
	if !h.m.HasReady() {
		return
	}
	rd := h.m.Ready()
	if err := h.st.Apply(context.Background(), &rd.Batch); err != nil {
		h.t.Fatalf("persist Ready: %v\n%s", err, rd)
	}
	for _, rec := range rd.Batch.Rounds {
		ups, err := h.st.Updates(context.Background(), rec.RoundId)
		if err != nil {
			h.t.Fatal(err)
		}
		if rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING && len(ups) > 0 {
			h.t.Fatalf("round %d is %v but keeps %d updates in flight", rec.RoundId, rec.Phase, len(ups))
		}
	}
	for _, line := range strings.SplitAfter(strings.TrimSuffix(rd.String(), "\n"), "\n") {
		h.out.WriteString("  " + line)
	}
	h.out.WriteString("\n")
	for _, msg := range rd.Messages {
		switch msg.Kind {
		case MsgTask:
			h.tasks[msg.Device] = msg.Task
		case MsgAck:
			if msg.Ack.Accepted {
				h.checkDurable(msg.Device, msg.Ack.RoundId)
			}
		}
	}
	h.m.Advance()
	if h.m.HasReady() {
		h.t.Fatal("Ready not empty after Advance")
	}
}

// checkDurable asserts an acknowledged update is on disk: in flight, or
// among the participants of its closed round.
func (h *harness) checkDurable(device string, round uint64) {
	h.t.Helper()
	ctx := context.Background()
	ups, err := h.st.Updates(ctx, round)
	if err != nil {
		h.t.Fatal(err)
	}
	if slices.ContainsFunc(ups, func(u *store.Update) bool { return u.DeviceId == device }) {
		return
	}
	rec, err := h.st.Round(ctx, round)
	if err != nil || !slices.Contains(rec.Participants, device) {
		h.t.Fatalf("ack of %s's update in round %d published before the update was persisted (%v)", device, round, err)
	}
}

// restart throws the machine away and rebuilds it from the store, as a
// coordinator killed after its last persist would be; the driver then
// reports the devices still online.
func (h *harness) restart() {
	h.t.Helper()
	fmt.Fprintf(&h.out, "> restart\n")
	snap, err := LoadSnapshot(context.Background(), h.st, h.now)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.m, err = New(h.cfg, snap); err != nil {
		h.t.Fatal(err)
	}
	h.flush()
	ids := make([]string, 0, len(h.online))
	for id := range h.online {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		h.mustStep(DeviceOnline{Device: id, Caps: h.online[id]})
	}
}

func (h *harness) msgID() []byte {
	h.msgSeq++
	return []byte(fmt.Sprintf("m%d", h.msgSeq))
}

// train is device's honest update for the task it holds.
func (h *harness) train(device string) UpdateReceived {
	h.t.Helper()
	task := h.tasks[device]
	if task == nil || task.Kind != fedgepb.TaskKind_TASK_KIND_TRAIN {
		h.t.Fatalf("%s holds no training task", device)
	}
	return UpdateReceived{MessageID: h.msgID(), Update: &fedgepb.Update{
		RoundId: task.RoundId, DeviceId: device, BaseModelHash: task.BaseModelHash, SampleCount: 100 + uint64(len(device)),
		Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: EncodeWeights(delta(device, task.RoundId)),
		Metrics: &fedgepb.TrainMetrics{Loss: 1 / float64(task.RoundId+1), Accuracy: 0.5, Steps: 10}, Nonce: task.Nonce,
	}}
}

// evaluate is device's evaluation result for the task it holds.
func (h *harness) evaluate(device string, acc float64) EvalResultReceived {
	h.t.Helper()
	task := h.tasks[device]
	if task == nil || task.Kind != fedgepb.TaskKind_TASK_KIND_EVALUATE {
		h.t.Fatalf("%s holds no evaluation task", device)
	}
	return EvalResultReceived{MessageID: h.msgID(), Result: &fedgepb.EvaluateResult{
		RoundId: task.RoundId, DeviceId: device, BaseModelHash: task.BaseModelHash, SampleCount: 50,
		Loss: 1 - acc, Accuracy: acc, Nonce: task.Nonce,
	}}
}

func online(id, region string) DeviceOnline {
	return DeviceOnline{Device: id, Caps: &fedgepb.Capabilities{Arch: "arm64", SampleCount: 600, Tags: map[string]string{"region": region}}}
}

// runConfig is the base configuration of the scenarios.
func runConfig() *fedgepb.RunConfig {
	return &fedgepb.RunConfig{
		ModelId: "mlp", Strategy: "fedavg", Fraction: 0.75, MinClients: 2, Quorum: 2, RoundTimeoutMs: 60_000,
		Rounds: 1, Seed: 7, Train: &fedgepb.TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.05},
	}
}
