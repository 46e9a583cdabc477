package round

import (
	"fmt"
	"testing"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// benchDim is about the parameter count of the reference MNIST MLP.
const benchDim = 100_000

// BenchmarkStepUpdate measures the machine's cost per accepted update
// (validation, decode, fold, record, ack) against the baseline of decoding
// and folding the same update straight into the aggregator.
func BenchmarkStepUpdate(b *testing.B) {
	const devices = 32
	base := make([]float32, benchDim)
	cfg := &fedgepb.RunConfig{ModelId: "mlp", Fraction: 1, MinClients: devices, RoundTimeoutMs: 1 << 40, Rounds: 1}
	deltas := make([][]byte, devices)
	for d := range deltas {
		w := make([]float32, benchDim)
		for i := range w {
			w[i] = float32((d+i)%7) / 100
		}
		deltas[d] = EncodeWeights(w)
	}
	newMachine := func() (*Machine, map[string]*fedgepb.RoundTask) {
		m, err := New(Config{NewAggregator: newFedAvg}, nil)
		if err != nil {
			b.Fatal(err)
		}
		for d := range devices {
			if err := m.Step(DeviceOnline{Device: fmt.Sprintf("d%03d", d)}); err != nil {
				b.Fatal(err)
			}
		}
		if err := m.Step(StartRun{RunID: 1, Config: cfg, Base: &store.ModelVersion{ModelId: "mlp", Weights: EncodeWeights(base)}}); err != nil {
			b.Fatal(err)
		}
		tasks := map[string]*fedgepb.RoundTask{}
		for _, msg := range m.Ready().Messages {
			if msg.Kind == MsgTask {
				tasks[msg.Device] = msg.Task
			}
		}
		m.Advance()
		return m, tasks
	}
	update := func(tasks map[string]*fedgepb.RoundTask, d int) UpdateReceived {
		id := fmt.Sprintf("d%03d", d)
		t := tasks[id]
		return UpdateReceived{MessageID: []byte(id), Update: &fedgepb.Update{
			RoundId: t.RoundId, DeviceId: id, BaseModelHash: t.BaseModelHash, SampleCount: 100,
			Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: deltas[d], Nonce: t.Nonce,
		}}
	}

	// Baseline: decode and fold only.
	agg, _ := newFedAvg(cfg, 1, benchDim)
	b.ResetTimer()
	for i := range b.N {
		w, err := DecodeWeights(deltas[i%devices], benchDim)
		if err != nil {
			b.Fatal(err)
		}
		if err := agg.Add("x", w, 100); err != nil {
			b.Fatal(err)
		}
	}
	baseNs := b.Elapsed().Nanoseconds()

	var m *Machine
	var tasks map[string]*fedgepb.RoundTask
	for i := range b.N {
		d := i % (devices - 1) // never the last device: the round stays open
		if d == 0 {
			b.StopTimer()
			m, tasks = newMachine()
			b.StartTimer()
		}
		if err := m.Step(update(tasks, d)); err != nil {
			b.Fatal(err)
		}
		if rd := m.Ready(); len(rd.Batch.Updates) != 1 {
			b.Fatalf("update not accepted: %s", rd)
		}
		m.Advance()
	}
	b.StopTimer()
	stepNs := b.Elapsed().Nanoseconds() - baseNs
	b.ReportMetric(float64(b.N)/(float64(stepNs)/1e9), "updates/s")
	b.ReportMetric(float64(b.N)/(float64(baseNs)/1e9), "baseline-updates/s")
	b.ReportMetric(float64(stepNs)/float64(baseNs), "x-baseline")
}
