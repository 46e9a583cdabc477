package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// BenchmarkUpdateIngest measures whole rounds of n devices through the
// driver (envelope verification, decoding, fold, persist, ack over the
// memory transport) and reports updates/s, next to the baseline of the
// same rounds fed straight into the round machine (no transport, no
// signatures, no store).
func BenchmarkUpdateIngest(b *testing.B) {
	const n = 20
	h := newHarness(b)
	h.cfgHook = func(c *Config) { c.Log = nil }
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%02d", i)
	}
	h.approve(ids...)
	h.start()
	defer h.stop()
	ags := make([]*agent, n)
	for i, id := range ids {
		ags[i] = h.agent(id)
		ags[i].hello(nil)
	}
	for h.status().DevicesOnline != n {
		time.Sleep(time.Millisecond)
	}
	req := startReq(uint32(b.N), n)
	h.startRun(req)
	dim := h.dimOf()
	delta := constDelta(dim, 0.001)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, a := range ags {
			task := a.task()
			a.ack(a.sendUpdate(a.update(task, 10, delta)))
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*n)/el.Seconds(), "updates/s")

	// Baseline: the same updates stepped into a bare machine.
	m, err := round.New(h.srv.machineConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		_ = m.Step(round.DeviceOnline{Device: id})
	}
	cfg, _ := RunConfig(req)
	mod, err := h.models.Get(context.Background(), testModel)
	if err != nil {
		b.Fatal(err)
	}
	base, err := h.srv.baseVersion(context.Background(), cfg, mod, true)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Step(round.StartRun{RunID: 1, Config: cfg, Base: base}); err != nil {
		b.Fatal(err)
	}
	enc := encodeF32(b, delta)
	start = time.Now()
	for range b.N {
		var tasks []*fedgepb.RoundTask
		for _, msg := range m.Ready().Messages {
			if msg.Kind == round.MsgTask {
				tasks = append(tasks, msg.Task)
			}
		}
		m.Advance()
		for i, task := range tasks {
			u := &fedgepb.Update{RoundId: task.RoundId, DeviceId: ids[i], BaseModelHash: task.BaseModelHash, SampleCount: 10,
				Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: enc, Nonce: task.Nonce}
			if err := m.Step(round.UpdateReceived{MessageID: make([]byte, wire.MessageIDSize), Update: u}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "baseline-machine-updates/s")
	b.ReportMetric(float64(dim), "params")
}
