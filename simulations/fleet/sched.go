package fleet

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/progress"
	"github.com/fedge-dev/fedge/internal/transport"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/report"
)

// hold takes a device's update out of the stream. Under the wall clock it
// goes out at once; under the virtual clock it is queued until the
// device's compute and link time since it got the task has passed.
func (f *Fleet) hold(dev int, key devRound, topic string, msg []byte, u *fedgepb.Update) {
	if f.virtual == nil {
		f.track.update(func() {
			delete(f.taskInfo, key)
			delete(f.track.taskAt, key)
		})
		f.release(context.Background(), held{dev: dev, key: key, topic: topic, msg: msg, blob: blobLen(u)}, false)
		return
	}
	var at time.Time
	f.track.update(func() {
		info := f.taskInfo[key]
		delete(f.taskInfo, key)
		samples := f.devices[dev].samples
		if info.maxSamples > 0 && info.maxSamples < samples {
			samples = info.maxSamples
		}
		up := len(msg) + blobLen(u)
		at = time.Unix(0, f.track.taskAt[key]).
			Add(f.profile.TransferTime(info.bytes + f.modelBytes)).
			Add(f.profile.TrainTime(dev, samples*max(info.epochs, 1))).
			Add(f.profile.TransferTime(up))
		delete(f.track.taskAt, key)
	})
	f.heldMu.Lock()
	f.seq++
	heap.Push(&f.queue, held{at: at, seq: f.seq, dev: dev, key: key, topic: topic, msg: msg, blob: blobLen(u)})
	f.heldMu.Unlock()
}

// blobLen is the length of an update's delta blob (0 when inline).
func blobLen(u *fedgepb.Update) int {
	if len(u.DeltaBlobId) == 0 {
		return 0
	}
	return int(u.DeltaLength)
}

// release delivers a held update; the scheduler then waits for its ack.
func (f *Fleet) release(ctx context.Context, h held, await bool) {
	f.track.update(func() {
		if await {
			f.track.awaiting[h.key] = true
		}
		f.track.up += int64(len(h.msg)) + int64(h.blob)
	})
	if err := f.devices[h.dev].raw.Publish(ctx, h.topic, h.msg, transport.PublishOptions{}); err != nil {
		f.log.Warn("deliver update", zap.String("device", f.devices[h.dev].id), zap.Error(err))
		f.track.update(func() { delete(f.track.awaiting, h.key) })
	}
}

// due pops the earliest held update if it is due at or before now, and
// otherwise reports when the next one is due.
func (f *Fleet) due(now time.Time) (h held, ok bool, next time.Time, any bool) {
	f.heldMu.Lock()
	defer f.heldMu.Unlock()
	if len(f.queue) == 0 {
		return held{}, false, time.Time{}, false
	}
	if !f.queue[0].at.After(now) {
		return heap.Pop(&f.queue).(held), true, time.Time{}, true
	}
	return held{}, false, f.queue[0].at, true
}

// late counts the updates of a closed round that missed its deadline:
// those the coordinator refused as late and those still on their way.
func (f *Fleet) late(round uint64) int {
	_, n, _ := f.track.roundCounts(round)
	f.heldMu.Lock()
	defer f.heldMu.Unlock()
	for _, h := range f.queue {
		if h.key.round == round {
			n++
		}
	}
	return n
}

// schedule drives the run to its end, writing a metrics line per round.
func (f *Fleet) schedule(ctx context.Context, w *report.Writer, wallStart time.Time, srvErr <-chan error) ([]report.Round, error) {
	var bar *progress.Bar
	if f.opts.Progress != nil {
		bar = progress.New(f.opts.Progress, f.sc.Name, f.sc.Rounds)
		defer bar.Finish()
	}
	em := emitter{f: f, w: w, bar: bar, wallStart: wallStart}
	for {
		select {
		case err := <-srvErr:
			return nil, fmt.Errorf("fleet: coordinator stopped: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		default:
		}
		st, err := f.quiesce(ctx)
		if err != nil {
			return nil, err
		}
		if err := em.emit(st); err != nil {
			return nil, err
		}
		if st.Run == nil || st.Run.State != "running" {
			return w.Rounds(), nil
		}
		if f.virtual == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		now := f.virtual.Now()
		h, ok, next, any := f.due(now)
		if ok {
			f.release(ctx, h, true)
			continue
		}
		if t, ok := f.virtual.Next(); ok && (!any || t.Before(next)) {
			next, any = t, true
		}
		if !any {
			return nil, fmt.Errorf("fleet: simulation stuck at %v: nothing scheduled and the run is %s", now.Sub(f.start), st.Run.State)
		}
		f.advance(next)
	}
}

// advance moves the virtual clock to t; if the coordinator's tick falls
// due it waits until the coordinator has taken it.
func (f *Fleet) advance(t time.Time) {
	n0, due := f.srvClk.state()
	f.virtual.Advance(t.Sub(f.virtual.Now()))
	if due.After(t) {
		return
	}
	deadline := time.Now().Add(max(f.opts.Stall, time.Minute))
	for {
		if n, _ := f.srvClk.state(); n > n0 {
			return
		}
		if time.Now().After(deadline) {
			f.stalls++
			f.log.Warn("coordinator did not take its tick")
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// quiesce waits until the fleet has nothing left to do at this instant
// and returns the coordinator's status then. The status call runs on the
// coordinator's loop, after whatever it was doing, so it doubles as a
// barrier.
func (f *Fleet) quiesce(ctx context.Context) (*admin.StatusDoc, error) {
	evalSince, nap := time.Time{}, 100*time.Microsecond
	for {
		if f.virtual != nil && !f.track.waitIdle(f.opts.Stall) {
			if len(f.slots) > 0 {
				continue // devices are still training: slow, not stuck
			}
			tasks, awaiting, installs := f.track.what()
			f.stalls++
			f.log.Warn("gave up waiting", zap.Int("tasks", tasks), zap.Int("acks", awaiting), zap.Int("installs", installs))
			f.track.forget()
		}
		st, err := f.srv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("fleet: status: %w", err)
		}
		if f.virtual == nil {
			return st, nil
		}
		if st.Round != nil && st.Round.Phase == "evaluating" && st.Run != nil && st.Run.State == "running" {
			if err := f.eval.failure(); err != nil {
				return nil, fmt.Errorf("fleet: server-side evaluation: %w", err)
			}
			// The server-side evaluation runs (or is about to): it takes
			// wall time, not fleet time. Its length depends on the model
			// and the test set, so only an hour without result is a stall.
			if evalSince.IsZero() {
				evalSince = time.Now()
			} else if time.Since(evalSince) > max(f.opts.Stall, time.Hour) {
				return nil, fmt.Errorf("fleet: server-side evaluation of round %d did not finish in %v", st.Round.RoundID, time.Since(evalSince).Round(time.Second))
			}
			// Each status call reads the run's history: back off while
			// the evaluation (tens of ms to minutes) runs.
			time.Sleep(nap)
			nap = min(2*nap, 20*time.Millisecond)
			continue
		}
		if b, _ := f.track.busy(); b {
			continue
		}
		return st, nil
	}
}

// emitter turns the coordinator's round history into metrics lines.
type emitter struct {
	f         *Fleet
	w         *report.Writer
	bar       *progress.Bar
	wallStart time.Time
	done      int
	lastUp    int64
	lastDown  int64
	lastAcc   float64
	lastLoss  float64
}

func (e *emitter) emit(st *admin.StatusDoc) error {
	f := e.f
	for e.done < len(st.History) {
		h := st.History[e.done]
		e.done++
		acc, loss := e.lastAcc, e.lastLoss
		switch {
		case h.Failed:
		case h.HasServerEval:
			acc, loss = h.ServerAccuracy, h.ServerLoss
		default:
			acc, loss = h.Accuracy, h.EvalLoss
		}
		e.lastAcc, e.lastLoss = acc, loss
		up, down := f.track.bytes()
		dropped, _, _ := f.track.roundCounts(h.RoundID)
		rejected := 0
		for reason, n := range h.Rejections {
			if reason != "already_stored" && reason != "late" {
				rejected += int(n)
			}
		}
		r := report.Round{
			Round: e.done, VirtualSeconds: f.clk.Now().Sub(f.start).Seconds(), WallSeconds: time.Since(e.wallStart).Seconds(),
			Accuracy: acc, Loss: loss, Selected: int(h.Selected), Participants: int(h.Accepted), Dropped: dropped, Late: f.late(h.RoundID),
			Rejected: rejected, BytesUp: up - e.lastUp, BytesDown: down - e.lastDown,
		}
		e.lastUp, e.lastDown = up, down
		if err := e.w.Add(r); err != nil {
			return err
		}
		if e.bar != nil {
			e.bar.Update(e.done, fmt.Sprintf("accuracy %.4f", acc))
		}
		f.log.Info("round", zap.Int("round", r.Round), zap.Float64("accuracy", acc), zap.Int("participants", r.Participants),
			zap.Int("dropped", dropped), zap.Float64("virtual_seconds", r.VirtualSeconds))
	}
	return nil
}

// heldQueue orders held updates by due time, then by arrival sequence
// (device order within one delivery wave is fixed by the sequence the
// scheduler assigned when it took them).
type heldQueue []held

func (q heldQueue) Len() int { return len(q) }
func (q heldQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].dev < q[j].dev
}
func (q heldQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *heldQueue) Push(x any)   { *q = append(*q, x.(held)) }
func (q *heldQueue) Pop() any {
	old := *q
	h := old[len(old)-1]
	*q = old[:len(old)-1]
	return h
}
