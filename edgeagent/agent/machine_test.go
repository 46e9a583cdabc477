package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

var t0 = time.Unix(1_700_000_000, 0)

func hashOf(v uint64) []byte {
	h := make([]byte, 32)
	h[0] = byte(v)
	h[31] = 0xAA
	return h
}

func mf(v uint64) *fedgepb.ModelManifest {
	return &fedgepb.ModelManifest{ModelId: "mlp", Version: v, WeightsHash: hashOf(v)}
}

func task(round, base uint64, kind fedgepb.TaskKind) *fedgepb.RoundTask {
	t := &fedgepb.RoundTask{RoundId: round, Kind: kind, ModelId: "mlp", ModelVersion: base,
		BaseModelHash: hashOf(base), Nonce: make([]byte, 16), DeadlineUnixMs: t0.Add(time.Hour).UnixMilli()}
	if kind == fedgepb.TaskKind_TASK_KIND_TRAIN {
		t.Train = &fedgepb.TrainConfig{Epochs: 1, BatchSize: 8, LearningRate: 0.1, Codec: fedgepb.Codec_CODEC_FLOAT32}
	} else {
		t.Evaluate = &fedgepb.EvaluateConfig{BatchSize: 8}
	}
	return t
}

func train(round, base uint64) *fedgepb.RoundTask {
	return task(round, base, fedgepb.TaskKind_TASK_KIND_TRAIN)
}

func pend(round uint64, id byte) Pending {
	mid := make([]byte, 16)
	mid[0] = id
	return Pending{RoundID: round, MessageID: mid, Envelope: []byte{id}}
}

func ack(round uint64, id byte) EvAck {
	return EvAck{Ack: &fedgepb.Ack{RoundId: round, MessageId: pend(round, id).MessageID, Accepted: true}}
}

// describe renders actions compactly for table comparison.
func describe(acts []Action) string {
	var out []string
	for _, a := range acts {
		switch x := a.(type) {
		case ActPersistTask:
			out = append(out, fmt.Sprintf("persist %d", x.Task.RoundId))
		case ActRun:
			out = append(out, fmt.Sprintf("run %d v%d", x.Task.RoundId, x.Version))
		case ActCancel:
			out = append(out, fmt.Sprintf("cancel %d", x.Round))
		case ActFetch:
			out = append(out, fmt.Sprintf("fetch v%d", x.Manifest.Version))
		case ActFinish:
			out = append(out, fmt.Sprintf("finish %d", x.Pending.RoundID))
		case ActPublish:
			out = append(out, fmt.Sprintf("publish %d", x.Pending.RoundID))
		case ActAcked:
			out = append(out, fmt.Sprintf("acked %d", x.Round))
		case ActDrop:
			out = append(out, fmt.Sprintf("drop %d", x.Round))
		case ActIgnore:
			out = append(out, "ignore "+x.What)
		}
	}
	return strings.Join(out, ", ")
}

type step struct {
	ev   Event
	want string
}

func TestMachine(t *testing.T) {
	v1 := []ModelRef{{Version: 1, WeightsHash: hashOf(1)}}
	cases := []struct {
		name    string
		models  []ModelRef
		task    *fedgepb.RoundTask
		pending []Pending
		done    []uint64
		steps   []step
	}{
		{name: "first model is fetched, then installed", steps: []step{
			{EvStart{Now: t0}, ""},
			{EvManifest{mf(1)}, "fetch v1"},
			{EvManifest{mf(1)}, ""}, // redelivery while fetching
			{EvModelInstalled{mf(1)}, ""},
			{EvManifest{mf(1)}, ""}, // retained manifest of the active model
		}},
		{name: "older manifest is ignored", models: []ModelRef{{Version: 5, WeightsHash: hashOf(5)}}, steps: []step{
			{EvManifest{mf(4)}, "ignore manifest"},
			{EvManifest{mf(6)}, "fetch v6"},
		}},
		{name: "a failed version is never fetched again", models: v1, steps: []step{
			{EvManifest{mf(2)}, "fetch v2"},
			{EvModelFailed{Manifest: mf(2), Reason: "weights hash"}, "ignore model"},
			{EvManifest{mf(2)}, "ignore manifest"},
			{EvManifest{mf(3)}, "fetch v3"},
		}},
		{name: "a transient fetch failure is retried after the resend interval", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvManifest{mf(2)}, "fetch v2"},
			{EvModelFailed{Manifest: mf(2), Reason: "timeout", Transient: true}, "ignore model fetch"},
			{EvTick{Now: t0.Add(time.Second)}, ""},
			{EvTick{Now: t0.Add(31 * time.Second)}, "fetch v2"},
		}},
		{name: "newer manifest while fetching is fetched next", models: v1, steps: []step{
			{EvManifest{mf(2)}, "fetch v2"},
			{EvManifest{mf(3)}, ""},
			{EvModelInstalled{mf(2)}, "fetch v3"},
		}},
		{name: "train, persist before publish, ack", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvTask{Task: train(7, 1), Now: t0}, "persist 7, run 7 v1"},
			{EvTask{Task: train(7, 1), Now: t0}, ""},
			{EvTaskDone{Round: 7, Result: pend(7, 1)}, "finish 7, publish 7"},
			{ack(7, 2), "ignore ack"}, // wrong message id
			{ack(7, 1), "acked 7"},
			{EvTask{Task: train(7, 1), Now: t0}, "ignore task"}, // never retrain a done round
		}},
		{name: "a new result is resent a resend interval after its publish", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvTask{Task: train(7, 1), Now: t0.Add(time.Minute)}, "persist 7, run 7 v1"},
			{EvTick{Now: t0.Add(2 * time.Minute)}, ""},
			{EvTaskDone{Round: 7, Result: pend(7, 1)}, "finish 7, publish 7"},
			{EvTick{Now: t0.Add(2*time.Minute + time.Second)}, ""},
			{EvTick{Now: t0.Add(2*time.Minute + 30*time.Second)}, "publish 7"},
			{ack(7, 1), "acked 7"},
		}},
		{name: "task waits for its base model", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvTask{Task: train(8, 2), Now: t0}, "persist 8"},
			{EvManifest{mf(2)}, "fetch v2"},
			{EvModelInstalled{mf(2)}, "run 8 v2"},
		}},
		{name: "task from the previous, still stored version runs", models: []ModelRef{{Version: 2, WeightsHash: hashOf(2)}, {Version: 1, WeightsHash: hashOf(1)}}, steps: []step{
			{EvTask{Task: train(8, 1), Now: t0}, "persist 8, run 8 v1"},
		}},
		{name: "task whose model never comes is dropped at the wait limit", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvTask{Task: func() *fedgepb.RoundTask {
				tk := train(9, 3)
				tk.DeadlineUnixMs = 0
				return tk
			}(), Now: t0}, "persist 9"},
			{EvTick{Now: t0.Add(5 * time.Minute)}, ""},
			{EvTick{Now: t0.Add(11 * time.Minute)}, "drop 9"},
			{EvTask{Task: train(9, 3), Now: t0}, "ignore task"},
		}},
		{name: "task whose base model fails its checks is dropped at once", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvTask{Task: train(8, 2), Now: t0}, "persist 8"},
			{EvManifest{mf(2)}, "fetch v2"},
			{EvModelFailed{Manifest: mf(2), Reason: "module imports something the host does not grant"}, "ignore model, drop 8"},
			{EvTask{Task: train(8, 2), Now: t0}, "ignore task"},
		}},
		{name: "task for failed weights waits while a newer version is fetched", models: v1, steps: []step{
			{EvStart{Now: t0}, ""},
			{EvManifest{mf(2)}, "fetch v2"},
			{EvManifest{mf(3)}, ""},
			{EvModelFailed{Manifest: mf(2), Reason: "bad"}, "ignore model, fetch v3"},
			{EvTask{Task: train(8, 2), Now: t0}, "persist 8"},
			{EvModelInstalled{mf(3)}, "drop 8"},
		}},
		{name: "task deadline is used when set", models: v1, steps: []step{
			{EvTask{Task: func() *fedgepb.RoundTask {
				tk := train(9, 3)
				tk.DeadlineUnixMs = t0.Add(time.Minute).UnixMilli()
				return tk
			}(), Now: t0}, "persist 9"},
			{EvTick{Now: t0.Add(2 * time.Minute)}, "drop 9"},
		}},
		{name: "failed training is dropped", models: v1, steps: []step{
			{EvTask{Task: train(4, 1), Now: t0}, "persist 4, run 4 v1"},
			{EvTaskDone{Round: 4, Err: errors.New("trap")}, "drop 4"},
		}},
		{name: "newer task cancels the running one", models: v1, steps: []step{
			{EvTask{Task: train(4, 1), Now: t0}, "persist 4, run 4 v1"},
			{EvTask{Task: train(3, 1), Now: t0}, "ignore task"},
			{EvTask{Task: train(5, 1), Now: t0}, "cancel 4, persist 5, run 5 v1"},
			{EvTaskDone{Round: 4, Result: pend(4, 1)}, "ignore task result"},
			{EvTaskDone{Round: 5, Result: pend(5, 1)}, "finish 5, publish 5"},
		}},
		{name: "unsupported codec is refused", models: v1, steps: []step{
			{EvTask{Task: func() *fedgepb.RoundTask {
				tk := train(4, 1)
				tk.Train.Codec = fedgepb.Codec_CODEC_SECAGG
				return tk
			}(), Now: t0}, "drop 4"},
		}},
		{name: "evaluate task", models: v1, steps: []step{
			{EvTask{Task: task(6, 1, fedgepb.TaskKind_TASK_KIND_EVALUATE), Now: t0}, "persist 6, run 6 v1"},
			{EvTaskDone{Round: 6, Result: pend(6, 3)}, "finish 6, publish 6"},
			{ack(6, 3), "acked 6"},
		}},
		{name: "restart resumes the persisted task and resends pending results", models: v1,
			task: train(12, 1), pending: []Pending{pend(11, 1), pend(10, 1)}, done: []uint64{9},
			steps: []step{
				{EvStart{Now: t0}, "publish 10, publish 11, run 12 v1"},
				{EvTick{Now: t0.Add(10 * time.Second)}, ""},
				{EvTick{Now: t0.Add(31 * time.Second)}, "publish 10, publish 11"},
				{ack(10, 1), "acked 10"},
				{EvTick{Now: t0.Add(62 * time.Second)}, "publish 11"},
				{EvTask{Task: train(11, 1), Now: t0}, "publish 11"}, // asked again: resend, never retrain
				{EvTask{Task: train(9, 1), Now: t0}, "ignore task"},
			}},
		{name: "a retry-later ack resends every pending result after its delay", models: v1,
			pending: []Pending{pend(10, 1), pend(11, 1)}, done: []uint64{9},
			steps: []step{
				{EvStart{Now: t0}, "publish 10, publish 11"},
				{EvTick{Now: t0.Add(time.Second)}, ""},
				{EvAck{Ack: &fedgepb.Ack{RetryAfterMs: 2500, Reason: "busy"}}, "ignore ack"},
				{EvTick{Now: t0.Add(3 * time.Second)}, ""},
				{EvTick{Now: t0.Add(3500 * time.Millisecond)}, "publish 10, publish 11"},
				{EvTick{Now: t0.Add(10 * time.Second)}, ""}, // then the resend interval again
				{ack(10, 1), "acked 10"},
				{ack(11, 1), "acked 11"},
				{EvAck{Ack: &fedgepb.Ack{RetryAfterMs: 2500}}, "ignore ack"},
				{EvTick{Now: t0.Add(60 * time.Second)}, ""},
			}},
		{name: "restart with a task whose model is missing waits", task: train(12, 1), steps: []step{
			{EvStart{Now: t0}, ""},
			{EvManifest{mf(1)}, "fetch v1"},
			{EvModelInstalled{mf(1)}, "run 12 v1"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMachine(MachineConfig{}, tc.models, tc.task, tc.pending, tc.done)
			for i, s := range tc.steps {
				if got := describe(m.Step(s.ev)); got != s.want {
					t.Fatalf("step %d (%T): got %q, want %q", i, s.ev, got, s.want)
				}
			}
		})
	}
}

func TestMachineKeepsAtMostKeepVersions(t *testing.T) {
	m := NewMachine(MachineConfig{}, nil, nil, nil, nil)
	for v := uint64(1); v <= 5; v++ {
		m.Step(EvManifest{mf(v)})
		m.Step(EvModelInstalled{mf(v)})
	}
	if len(m.models) != KeepVersions {
		t.Fatalf("%d versions kept, want %d", len(m.models), KeepVersions)
	}
	if act, _ := m.Active(); act.Version != 5 {
		t.Fatalf("active v%d, want v5", act.Version)
	}
	// A task on a version that was pruned waits (and is eventually dropped).
	if got := describe(m.Step(EvTask{Task: train(1, 2), Now: t0})); got != "persist 1" {
		t.Fatalf("got %q", got)
	}
}

func TestMachineDoneIsBounded(t *testing.T) {
	var done []uint64
	for r := uint64(1); r <= MaxDoneRounds+10; r++ {
		done = append(done, r)
	}
	m := NewMachine(MachineConfig{}, nil, nil, nil, done)
	if len(m.done) != MaxDoneRounds || m.done[0] != 11 || !slices.IsSorted(m.done) {
		t.Fatalf("done has %d entries starting at %d", len(m.done), m.done[0])
	}
}
