package fleet

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// StormReport is what a reconnect storm (scenario reconnect_storm) did.
type StormReport struct {
	// Round is the coordinator's id of the round the storm hit.
	Round uint64
	// Dropped is the number of devices whose connection was cut, Spread
	// the wall time from the first cut to the last.
	Dropped int
	Spread  time.Duration
	// AcceptedBefore and AcceptedAfter are the updates of the round the
	// coordinator had accepted just before the first cut and just after the
	// last; OpenAfter says whether the round was still training then (the
	// storm hit the middle of the round).
	AcceptedBefore, AcceptedAfter int
	OpenAfter                     bool
	// Reconnected is the number of those devices whose MQTT client had
	// connected again by the end of the run.
	Reconnected int
	// OnlineMin is the fewest devices the coordinator counted online while
	// the storm lasted (polled every 20 ms, so a dip shorter than that may
	// be missed), and Recovered the wall time from the first cut until it
	// counted every device online again (0: it never did before the run
	// ended and Options.Stall passed).
	OnlineMin int
	Recovered time.Duration
	// PeakQueued is the most messages the coordinator's inbox held at
	// once, and PeakOldestMs the longest a message had waited in it, as
	// sampled with the online count.
	PeakQueued   int
	PeakOldestMs int64
	// Publishes is the number of messages the coordinator published from
	// the first cut until the fleet was back online, PublishWait the wall
	// time it spent waiting in them (its loop publishes synchronously, at
	// QoS 1 over MQTT), PublishMax the longest one.
	Publishes               int
	PublishWait, PublishMax time.Duration
	// AllReconnected is the wall time from the first cut until the MQTT
	// client of every device cut had connected again (0: not all did
	// before the monitor stopped).
	AllReconnected time.Duration
}

// reconnectWatch is what cmd/edgeagent does for its one device: when a
// device's MQTT client has connected again, its agent is told, so that it
// says hello (its will announced it offline) and re-publishes what was not
// acknowledged. One goroutine watches the whole fleet's connection counts.
func (f *Fleet) reconnectWatch(ctx context.Context, wg *sync.WaitGroup) {
	seen := make([]uint64, len(f.devices))
	any := false
	for i := range f.devices {
		if c := f.devices[i].client; c != nil {
			seen[i], any = c.Stats().Connects, true
		}
	}
	if !any {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for i := range f.devices {
				d := &f.devices[i]
				if n := d.client.Stats().Connects; n != seen[i] {
					seen[i] = n
					d.agent.Reconnected()
				}
			}
		}
	}()
}

// stormPlan draws the devices a storm cuts and when, from the seed: the
// first ceil(fraction × n) of a seeded permutation, each at an offset
// drawn uniformly in [0, within], in order of offset.
func stormPlan(seed uint64, n int, fraction float64, within time.Duration) (devs []int, at []time.Duration) {
	r := rand.New(rand.NewPCG(seed, 0x5707_3c0a_7ec7))
	k := min(n, int(math.Ceil(fraction*float64(n)-1e-9)))
	perm := r.Perm(n)[:k]
	type cut struct {
		dev int
		at  time.Duration
	}
	cuts := make([]cut, k)
	for i, d := range perm {
		cuts[i] = cut{dev: d}
		if within > 0 {
			cuts[i].at = time.Duration(r.Int64N(int64(within) + 1))
		}
	}
	slices.SortStableFunc(cuts, func(a, b cut) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.dev - b.dev
	})
	devs, at = make([]int, k), make([]time.Duration, k)
	for i, c := range cuts {
		devs[i], at[i] = c.dev, c.at
	}
	return devs, at
}

// stormState follows the storm of a run.
type stormState struct {
	round   int    // the scenario's round to hit (1-based), 0: none
	rounds  int    // distinct training rounds seen so far
	last    uint64 // the last training round id seen
	tasks   int    // tasks of the storm round published
	started bool
	done    chan struct{} // closed when the storm and its monitor ended
	rep     StormReport
}

// stormTask counts a training task of round id (with track.mu held) and
// reports whether it was the last of the storm round's tasks: then the
// storm starts.
func (f *Fleet) stormTask(id uint64) bool {
	s := &f.storm
	if s.round == 0 || s.started {
		return false
	}
	if id != s.last {
		s.last = id
		s.rounds++
	}
	if s.rounds != s.round {
		return false
	}
	s.tasks++
	if s.tasks < f.expectedSelected() {
		return false
	}
	s.started = true
	s.rep.Round = id
	return true
}

// runStorm cuts the planned connections, then watches the coordinator's
// count of devices online until it is back to the whole fleet.
func (f *Fleet) runStorm(ctx context.Context) {
	defer close(f.storm.done)
	sc := f.sc.ReconnectStorm
	devs, at := stormPlan(f.sc.Seed, len(f.devices), sc.Fraction, sc.Within)
	round := f.storm.rep.Round
	accepted := func() (int, bool) {
		st, err := f.srv.Status(ctx)
		if err != nil || st.Round == nil || st.Round.RoundID != round {
			return 0, false
		}
		return st.Round.Accepted, st.Round.Phase == "training"
	}
	before, _ := accepted()
	connects := make([]uint64, len(devs))
	for i, dev := range devs {
		connects[i] = f.devices[dev].client.Stats().Connects
	}
	f.pubs.reset()
	start := time.Now()
	monitor := make(chan struct{})
	go func() {
		defer close(monitor)
		f.watchOnline(ctx, start, devs, connects)
	}()
	for i, dev := range devs {
		if w := time.Until(start.Add(at[i])); w > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(w):
			}
		}
		f.devices[dev].client.DropConnection()
	}
	spread := time.Since(start)
	after, open := accepted()
	f.log.Info("reconnect storm", zap.Uint64("round", round), zap.Int("dropped", len(devs)), zap.Duration("spread", spread),
		zap.Int("accepted_before", before), zap.Int("accepted_after", after), zap.Bool("open_after", open))
	f.track.update(func() {
		r := &f.storm.rep
		r.Dropped, r.Spread, r.AcceptedBefore, r.AcceptedAfter, r.OpenAfter = len(devs), spread, before, after, open
	})
	<-monitor
}

// watchOnline polls the coordinator's count of devices online from the
// storm's start until it is the whole fleet again after a dip (or, if no
// dip is seen, until 5 s after the storm's spread).
func (f *Fleet) watchOnline(ctx context.Context, start time.Time, devs []int, connects []uint64) {
	n := len(f.devices)
	low := n
	deadline := start.Add(max(f.opts.Stall, time.Minute))
	back := false
	for time.Now().Before(deadline) {
		if !back {
			back = true
			for i, dev := range devs {
				if f.devices[dev].client.Stats().Connects <= connects[i] {
					back = false
					break
				}
			}
			if back {
				rec := time.Since(start)
				f.track.update(func() { f.storm.rep.AllReconnected = rec })
			}
		}
		st, err := f.srv.Status(ctx)
		if err != nil {
			return
		}
		low = min(low, st.DevicesOnline)
		h := f.srv.Health()
		queued := 0
		for _, n := range h.Inbox.Queued {
			queued += n
		}
		f.track.update(func() {
			r := &f.storm.rep
			r.OnlineMin, r.PeakQueued, r.PeakOldestMs = low, max(r.PeakQueued, queued), max(r.PeakOldestMs, h.Inbox.OldestMs)
		})
		if st.DevicesOnline >= n && (low < n || time.Since(start) > f.sc.ReconnectStorm.Within+5*time.Second) {
			rec := time.Since(start)
			np, wait, longest := f.pubs.reset()
			f.track.update(func() {
				r := &f.storm.rep
				r.Recovered, r.Publishes, r.PublishWait, r.PublishMax = rec, np, wait, longest
			})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	f.log.Warn("devices online did not recover after the reconnect storm", zap.Int("online_min", low))
}

// stormReport waits for the storm to end (bounded by Options.Stall) and
// returns its report, nil without a storm.
func (f *Fleet) stormReport(ctx context.Context) *StormReport {
	if f.storm.round == 0 {
		return nil
	}
	f.track.mu.Lock()
	started := f.storm.started
	f.track.mu.Unlock()
	if started {
		select {
		case <-f.storm.done:
		case <-ctx.Done():
		case <-time.After(max(f.opts.Stall, time.Minute)):
		}
	}
	f.track.mu.Lock()
	rep := f.storm.rep
	f.track.mu.Unlock()
	devs, _ := stormPlan(f.sc.Seed, len(f.devices), f.sc.ReconnectStorm.Fraction, 0)
	if started {
		for _, d := range devs {
			if c := f.devices[d].client; c != nil && c.Stats().Connects > 1 {
				rep.Reconnected++
			}
		}
	}
	return &rep
}
