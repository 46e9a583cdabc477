package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// TestRestartRecovery stops the server mid-round (two of three updates
// acknowledged) and restarts it on the same store: tasks and acks are
// republished, resent updates are acknowledged without being counted
// twice, and the round commits the exact FedAvg of the three updates.
func TestRestartRecovery(t *testing.T) {
	h := newHarness(t)
	ids := []string{"dev-a", "dev-b", "dev-c"}
	h.approve(ids...)
	h.start()
	ag := map[string]*agent{}
	for _, id := range ids {
		ag[id] = h.agent(id)
		ag[id].hello(nil)
	}
	h.waitFor("online", func() bool { return h.status().DevicesOnline == 3 })
	h.startRun(startReq(1, 3))
	dim := h.dimOf()
	samples, vals := []uint64{5, 10, 20}, []float32{0.3, 0.1, -0.4}
	tasks := map[string]*fedgepb.RoundTask{}
	ups := map[string]*fedgepb.Update{}
	for i, id := range ids {
		tasks[id] = ag[id].task()
		ups[id] = ag[id].update(tasks[id], samples[i], vals[i:i+1])
		ups[id].EncodedDelta = encodeF32(t, constDelta(dim, vals[i]))
	}
	msgA := ag["dev-a"].sendUpdate(ups["dev-a"])
	ag["dev-a"].ack(msgA)
	msgB := ag["dev-b"].sendUpdate(ups["dev-b"])
	ag["dev-b"].ack(msgB)

	h.start() // restart on the same store
	// Republished: dev-a's and dev-b's acks, dev-c's task.
	if ack := ag["dev-a"].ack(msgA); !ack.Accepted {
		t.Fatalf("republished ack %+v", ack)
	}
	ag["dev-b"].ack(msgB)
	if again := ag["dev-c"].task(); string(again.Nonce) != string(tasks["dev-c"].Nonce) {
		t.Fatalf("republished task has another nonce")
	}
	// dev-a resends (as an agent does on reconnect): acked, not refolded.
	if ack := ag["dev-a"].ack(ag["dev-a"].sendUpdate(ups["dev-a"])); !ack.Accepted {
		t.Fatalf("resend ack %+v", ack)
	}
	ag["dev-c"].ack(ag["dev-c"].sendUpdate(ups["dev-c"]))
	h.waitFor("commit", func() bool { return h.status().ModelVersion == 2 })
	assertClose(t, h.weights(2), expectFedAvg(h.weights(1), samples, vals))
	if st := h.status(); st.Run.State != "done" || st.History[0].Accepted != 3 {
		t.Fatalf("after restart %+v", st.Run)
	}
}

func TestDeadlineQuorumAndLateUpdate(t *testing.T) {
	h := newHarness(t)
	ags := h.online("dev-a", "dev-b")
	a, b := ags[0], ags[1]
	req := startReq(1, 2)
	req.DeadlineMs = 10_000
	h.startRun(req)
	dim := h.dimOf()
	ta, tb := a.task(), b.task()
	a.ack(a.sendUpdate(a.update(ta, 10, constDelta(dim, 0.1))))
	h.advance(11 * time.Second)
	h.waitFor("round failed", func() bool {
		st := h.status()
		return len(st.History) == 1 && st.History[0].Failed
	})
	// Round 2 starts at once with new tasks.
	ta2 := a.task()
	if ta2.RoundId != ta.RoundId+1 {
		t.Fatalf("next task round %d", ta2.RoundId)
	}
	// dev-b's round-1 update arrives late: recorded, not aggregated.
	ack := b.ack(b.sendUpdate(b.update(tb, 10, constDelta(dim, 0.1))))
	if ack.Accepted || ack.Reason != "late" {
		t.Fatalf("late ack %+v", ack)
	}
	if st := h.status(); st.Rejections["late"] != 1 || st.Round.Accepted != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestEnrollment(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx := context.Background()
	res, err := h.srv.AddDevice(ctx, "test", "dev-x")
	if err != nil {
		t.Fatal(err)
	}
	if res.Token == "" || res.Password == "" || res.Username != "dev-x" {
		t.Fatalf("add device %+v", res)
	}
	if _, err := h.srv.AddDevice(ctx, "test", "bad/id"); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("bad id: %v", err)
	}
	enroll := func(a *agent, token string) *fedgepb.EnrollResponse {
		a.send(topics.KindEnroll, fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST, &fedgepb.EnrollRequest{
			DeviceId: a.id, PublicKey: a.key.Public().(ed25519.PublicKey), EnrollmentToken: token,
		})
		return a.next(fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE).Msg.(*fedgepb.EnrollResponse)
	}
	x := h.agent("dev-x")
	// Before enrollment its messages are from an unknown sender.
	x.hello(nil)
	h.waitFor("unknown sender", func() bool { return h.srv.WireCounters().Count("unknown_sender") == 1 })
	if r := enroll(x, "wrong-token"); r.Accepted || r.Reason != registry.RefuseBadToken {
		t.Fatalf("bad token: %+v", r)
	}
	if r := enroll(x, res.Token); !r.Accepted {
		t.Fatalf("token enrollment: %+v", r)
	}
	// The token is one-time; the enrolled device re-enrolling is accepted.
	if r := enroll(x, res.Token); !r.Accepted {
		t.Fatalf("re-enrollment: %+v", r)
	}
	x.hello(map[string]string{"region": "eu"})
	h.waitFor("online", func() bool { return h.status().DevicesOnline == 1 })

	// Without a token: pending until approved.
	y := h.agent("dev-y")
	if r := enroll(y, ""); r.Accepted || !r.PendingApproval {
		t.Fatalf("no token: %+v", r)
	}
	if _, err := h.srv.ApproveDevice(ctx, "test", "dev-nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("approve unknown: %v", err)
	}
	d, err := h.srv.ApproveDevice(ctx, "test", "dev-y")
	if err != nil || d.State != "approved" {
		t.Fatalf("approve: %+v %v", d, err)
	}
	if r := y.next(fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE).Msg.(*fedgepb.EnrollResponse); !r.Accepted {
		t.Fatalf("approval notice %+v", r)
	}
	devs, err := h.srv.Devices(ctx)
	if err != nil || len(devs) != 2 || devs[0].DeviceID != "dev-x" || !devs[0].Online || devs[0].Tags["region"] != "eu" || devs[1].State != "approved" {
		t.Fatalf("devices %+v %v", devs, err)
	}
	audit, err := h.srv.Audit(ctx, 0, 100)
	if err != nil || len(audit) != 3 {
		t.Fatalf("audit %+v %v", audit, err)
	}
	// Going offline (last will) is seen.
	x.send(topics.KindStatus, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, &fedgepb.Status{DeviceId: "dev-x", State: fedgepb.DeviceState_DEVICE_STATE_OFFLINE})
	h.waitFor("offline", func() bool { return h.status().DevicesOnline == 0 })
}

// TestBlobUpdate sends a delta as a blob served by the device.
func TestBlobUpdate(t *testing.T) {
	h := newHarness(t)
	h.approve("dev-a")
	h.start()
	a := h.agent("dev-a")
	a.hello(nil)
	h.waitFor("online", func() bool { return h.status().DevicesOnline == 1 })
	h.startRun(startReq(1, 1))
	dim := h.dimOf()
	task := a.task()
	u, _, _ := a.blobUpdate(task, 10, constDelta(dim, 0.25))
	if ack := a.ack(a.sendUpdate(u)); !ack.Accepted {
		t.Fatalf("blob update refused: %+v", ack)
	}
	h.waitFor("commit", func() bool { return h.status().ModelVersion == 2 })
	assertClose(t, h.weights(2), expectFedAvg(h.weights(1), []uint64{10}, []float32{0.25}))
}

func TestRollback(t *testing.T) {
	h := newHarness(t)
	h.approve("dev-a")
	h.start()
	a := h.agent("dev-a")
	a.hello(nil)
	h.waitFor("online", func() bool { return h.status().DevicesOnline == 1 })
	h.startRun(startReq(1, 1))
	a.ack(a.sendUpdate(a.update(a.task(), 10, constDelta(h.dimOf(), 0.5))))
	h.waitFor("done", func() bool { return h.status().Run.State == "done" })
	ctx := context.Background()
	if _, err := h.srv.Rollback(ctx, "test", 9); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("rollback to a missing version: %v", err)
	}
	v, err := h.srv.Rollback(ctx, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != 3 || v.ParentVersion != 1 || v.Strategy != "rollback" {
		t.Fatalf("rollback version %+v", v)
	}
	assertClose(t, h.weights(3), h.weights(1))
	if st := h.status(); st.ModelVersion != 3 {
		t.Fatalf("status model version %d", st.ModelVersion)
	}
	// A new run continues from the rolled-back version, numbering after it.
	h.startRun(startReq(1, 1))
	task := a.task()
	if task.ModelVersion != 3 {
		t.Fatalf("task trains version %d, want 3", task.ModelVersion)
	}
	a.ack(a.sendUpdate(a.update(task, 10, constDelta(h.dimOf(), 0.5))))
	h.waitFor("commit", func() bool { return h.status().ModelVersion == 4 })
	models, err := h.srv.Models(ctx)
	if err != nil || len(models.Versions) != 4 || len(models.Modules) != 2 {
		t.Fatalf("models %+v %v", models, err)
	}
	audit, _ := h.srv.Audit(ctx, 0, 100)
	found := false
	for _, e := range audit {
		found = found || e.Action == "models.rollback"
	}
	if !found {
		t.Fatalf("no rollback in the audit log: %+v", audit)
	}
}

func TestFederatedEvaluationAndRobustStrategy(t *testing.T) {
	h := newHarness(t)
	ids := []string{"dev-a", "dev-b", "dev-c"}
	h.approve(ids...)
	h.start()
	ag := map[string]*agent{}
	for _, id := range ids {
		ag[id] = h.agent(id)
		ag[id].hello(nil)
	}
	h.waitFor("online", func() bool { return h.status().DevicesOnline == 3 })
	req := startReq(0, 3)
	req.Strategy, req.TargetAccuracy, req.FederatedEval = "median", 0.9, true
	h.startRun(req)
	dim := h.dimOf()
	vals := []float32{0.1, 0.2, 5} // the median ignores the outlier
	for i, id := range ids {
		task := ag[id].task()
		ag[id].ack(ag[id].sendUpdate(ag[id].update(task, 10, constDelta(dim, vals[i]))))
	}
	h.waitFor("commit", func() bool { return h.status().ModelVersion == 2 })
	assertClose(t, h.weights(2), expectFedAvg(h.weights(1), []uint64{1}, []float32{0.2}))
	for _, id := range ids {
		task := ag[id].task()
		if task.Kind != fedgepb.TaskKind_TASK_KIND_EVALUATE {
			t.Fatalf("task kind %v", task.Kind)
		}
		msg := ag[id].send(topics.KindUpdate, fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT, &fedgepb.EvaluateResult{
			RoundId: task.RoundId, DeviceId: id, BaseModelHash: task.BaseModelHash, SampleCount: 100, Loss: 0.2, Accuracy: 0.95, Nonce: task.Nonce,
		})
		if ack := ag[id].ack(msg); !ack.Accepted {
			t.Fatalf("eval ack %+v", ack)
		}
	}
	h.waitFor("target reached", func() bool { return h.status().Run.State == "done" })
	st := h.status()
	if st.History[0].EvalAccuracy != 0.95 || st.History[0].Accuracy != 0.95 || !st.Run.HasAccuracy {
		t.Fatalf("status %+v", st.History)
	}
}

// TestDroppedDeviceClosesRound: a selected device that reports it gave up
// its task is not waited for: the round commits with the other device's
// update while the (virtual) clock stands still, and the status and history
// count the drop.
func TestDroppedDeviceClosesRound(t *testing.T) {
	h := newHarness(t)
	ags := h.online("dev-a", "dev-b")
	a, b := ags[0], ags[1]
	req := startReq(1, 2)
	req.Quorum = 1
	h.startRun(req)
	taskB := b.task()
	b.send(topics.KindStatus, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, &fedgepb.Status{DeviceId: "dev-b",
		State: fedgepb.DeviceState_DEVICE_STATE_DROPPED, RoundId: taskB.RoundId, Reason: "base model failed its checks"})
	h.waitFor("drop counted", func() bool { r := h.status().Round; return r != nil && r.Dropped == 1 })
	a.ack(a.sendUpdate(a.update(a.task(), 10, constDelta(h.dimOf(), 0.5))))
	h.waitFor("done", func() bool { return h.status().Run.State == "done" })
	hist := h.status().History
	if len(hist) != 1 || hist[0].Accepted != 1 || hist[0].Dropped != 1 || hist[0].Failed {
		t.Fatalf("history %+v, want one committed round with 1 update and 1 dropped", hist)
	}
}

// TestOptimizerStateSurvivesRestart: a FedAvgM or FedAdam run restarted
// between its rounds ends on exactly the model of the same run without
// restarts: the momentum and moments are persisted with every version.
func TestOptimizerStateSurvivesRestart(t *testing.T) {
	for _, strat := range []string{"fedavgm", "fedadam"} {
		t.Run(strat, func(t *testing.T) {
			run := func(restart bool) []float32 {
				h := newHarness(t)
				a := h.online("dev-a")[0]
				req := startReq(3, 1)
				req.Strategy = strat
				h.startRun(req)
				dim := h.dimOf()
				for r := 1; r <= 3; r++ {
					if restart && r > 1 {
						h.start()
					}
					task := a.task()
					for task.RoundId != uint64(r) { // a restart republishes the task
						task = a.task()
					}
					a.ack(a.sendUpdate(a.update(task, 10, constDelta(dim, 0.1*float32(r)-0.25))))
					h.waitFor("commit", func() bool { return h.status().ModelVersion == uint64(r+1) })
				}
				return h.weights(4)
			}
			want, got := run(false), run(true)
			if !slices.Equal(got, want) {
				t.Fatalf("after restarts the model differs from the uninterrupted run's (first weights %v, want %v)", got[:3], want[:3])
			}
		})
	}
}

// TestBlobUpdateResendNeedsNoBlob: a device resends an update whose blob
// the coordinator already fetched and acknowledged, after deleting the
// blob (the ack crossed the resend). It is acknowledged again at once,
// without a second fetch that could only fail against an honest device.
func TestBlobUpdateResendNeedsNoBlob(t *testing.T) {
	h := newHarness(t)
	ags := h.online("dev-a", "dev-b")
	h.startRun(startReq(1, 2))
	dim := h.dimOf()
	task := ags[0].task()
	u, snd, bid := ags[0].blobUpdate(task, 10, constDelta(dim, 0.25))
	raw, id := ags[0].seal(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u)
	ags[0].raw(topics.KindUpdate, raw)
	if ack := ags[0].ack(id); !ack.Accepted {
		t.Fatalf("blob update refused: %+v", ack)
	}
	if err := snd.Withdraw(context.Background(), bid); err != nil {
		t.Fatal(err)
	}
	ags[0].raw(topics.KindUpdate, raw)
	if ack := ags[0].ack(id); !ack.Accepted {
		t.Fatalf("resend: %+v, want accepted", ack)
	}
	rej := h.status().Rejections
	if rej[ReasonBlobFetch] != 0 || rej["already_stored"] != 1 {
		t.Fatalf("rejections %v: want the resend counted as already stored, no blob fetch failure", rej)
	}
}
