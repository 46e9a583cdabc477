package round

import (
	"math"
	"testing"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// fuzzMachine is a machine in round 1 of a run with dev-a..dev-c selected.
func fuzzMachine(t testing.TB) (*Machine, map[string]*fedgepb.RoundTask) {
	m, err := New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		if err := m.Step(online(id, "eu")); err != nil {
			t.Fatal(err)
		}
	}
	cfg := runConfig()
	cfg.Fraction, cfg.MinClients, cfg.Quorum = 1, 3, 3
	if err := m.Step(StartRun{RunID: 1, Config: cfg, Base: initialModel()}); err != nil {
		t.Fatal(err)
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

// FuzzUpdate feeds one arbitrary update (after an honest one) to a machine
// in training: it never errors or panics, answers with exactly one ack, and
// a positive ack comes with the update persisted or already stored.
func FuzzUpdate(f *testing.F) {
	_, tasks := fuzzMachine(f)
	good := tasks["dev-b"]
	delta := EncodeWeights([]float32{0.1, 0.2, 0.3, 0.4})
	nan := EncodeWeights([]float32{0, float32(math.NaN()), 0, 0})
	seeds := []struct {
		round   uint64
		device  string
		base    []byte
		samples uint64
		codec   int32
		delta   []byte
		nonce   []byte
		loss    float64
	}{
		{1, "dev-b", good.BaseModelHash, 10, 1, delta, good.Nonce, 0.5},         // accepted
		{1, "dev-a", good.BaseModelHash, 10, 1, delta, good.Nonce, 0.5},         // replay (redelivery of dev-a)
		{1, "dev-b", make([]byte, 32), 10, 1, delta, good.Nonce, 0.5},           // stale base
		{1, "dev-b", good.BaseModelHash, 0, 1, delta, good.Nonce, 0.5},          // no samples
		{1, "dev-b", good.BaseModelHash, 10, 1, delta[:12], good.Nonce, 0.5},    // wrong shape
		{1, "dev-b", good.BaseModelHash, 10, 1, nan, good.Nonce, 0.5},           // NaN
		{1, "dev-b", good.BaseModelHash, 10, 1, delta, good.Nonce, math.Inf(1)}, // Inf loss
		{1, "dev-b", good.BaseModelHash, 10, 3, delta, good.Nonce, 0.5},         // unsupported codec
		{1, "dev-z", good.BaseModelHash, 10, 1, delta, good.Nonce, 0.5},         // not selected
		{2, "dev-b", good.BaseModelHash, 10, 1, delta, good.Nonce, 0.5},         // unknown round
		{0, "x", nil, 0, 0, nil, nil, 0},
	}
	for _, s := range seeds {
		f.Add(s.round, s.device, s.base, s.samples, s.codec, s.delta, s.nonce, s.loss)
	}
	f.Fuzz(func(t *testing.T, round uint64, device string, base []byte, samples uint64, codec int32, delta, nonce []byte, loss float64) {
		if topics.ValidateID(device) != nil {
			return // refused as ErrInvalidEvent by design (TestStepErrors)
		}
		m, tasks := fuzzMachine(t)
		honest := tasks["dev-a"]
		first := UpdateReceived{MessageID: []byte("m0"), Update: &fedgepb.Update{
			RoundId: 1, DeviceId: "dev-a", BaseModelHash: honest.BaseModelHash, SampleCount: 5,
			Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: EncodeWeights(make([]float32, testDim)), Nonce: honest.Nonce,
		}}
		if err := m.Step(first); err != nil {
			t.Fatal(err)
		}
		m.Ready()
		m.Advance()
		ev := UpdateReceived{MessageID: []byte("m1"), Update: &fedgepb.Update{
			RoundId: round, DeviceId: device, BaseModelHash: base, SampleCount: samples, Codec: fedgepb.Codec(codec),
			EncodedDelta: delta, Nonce: nonce, Metrics: &fedgepb.TrainMetrics{Loss: loss},
		}}
		if err := m.Step(ev); err != nil {
			t.Fatalf("Step: %v", err)
		}
		rd := m.Ready()
		var acks []*fedgepb.Ack
		for _, msg := range rd.Messages {
			if msg.Kind == MsgAck {
				acks = append(acks, msg.Ack)
			}
		}
		if len(acks) != 1 {
			t.Fatalf("%d acks for one update: %s", len(acks), rd)
		}
		if a := acks[0]; a.Accepted && a.Reason == "" && len(rd.Batch.Updates) != 1 {
			t.Fatalf("accepted without persisting: %s", rd)
		}
		if st := m.Status(); st.Accepted > 2 {
			t.Fatalf("%d updates accepted from two events", st.Accepted)
		}
	})
}
