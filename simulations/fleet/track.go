package fleet

import (
	"sync"
	"time"
)

// tracker counts the work the fleet has in hand, so that the scheduler
// advances the virtual clock only when nothing can happen at the current
// instant any more: a device holding a task it has not answered, an
// update released to the coordinator and not yet acknowledged, or a
// device still installing a model the coordinator announced.
type tracker struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change

	tasks    map[int]int        // device -> tasks received and not answered
	awaiting map[devRound]bool  // updates released and not acknowledged
	installs map[int]uint64     // device -> model version it must install
	dropped  map[uint64]int     // round -> tasks swallowed (dropout, unavailable)
	late     map[uint64]int     // round -> updates that arrived after the deadline
	up, down int64              // bytes device->coordinator, coordinator->devices
	seen     map[devRound]bool  // updates taken from devices (held or released)
	attacked map[uint64]int     // round -> updates corrupted by attackers
	taskAt   map[devRound]int64 // virtual ns at which a device got a task
}

type devRound struct {
	dev   int
	round uint64
}

func newTracker() *tracker {
	return &tracker{
		changed: make(chan struct{}), tasks: map[int]int{}, awaiting: map[devRound]bool{},
		installs: map[int]uint64{}, dropped: map[uint64]int{}, late: map[uint64]int{},
		seen: map[devRound]bool{}, attacked: map[uint64]int{}, taskAt: map[devRound]int64{},
	}
}

// update runs f under the lock and wakes waiters.
func (t *tracker) update(f func()) {
	t.mu.Lock()
	f()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// busy reports whether work is in hand, and a channel closed on the next
// change.
func (t *tracker) busy() (bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.tasks) > 0 || len(t.awaiting) > 0 || len(t.installs) > 0, t.changed
}

// waitIdle blocks until no work is in hand or stall passes without any
// change; it reports whether the fleet went idle.
func (t *tracker) waitIdle(stall time.Duration) bool {
	for {
		b, ch := t.busy()
		if !b {
			return true
		}
		timer := time.NewTimer(stall)
		select {
		case <-ch:
			timer.Stop()
		case <-timer.C:
			return false
		}
	}
}

// what describes the work in hand (for stall diagnostics).
func (t *tracker) what() (tasks, awaiting, installs int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.tasks), len(t.awaiting), len(t.installs)
}

// forget drops all work in hand (after a stall, so the run can go on).
func (t *tracker) forget() {
	t.update(func() {
		clear(t.tasks)
		clear(t.awaiting)
		clear(t.installs)
	})
}

func (t *tracker) bytes() (up, down int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.up, t.down
}

func (t *tracker) roundCounts(round uint64) (dropped, late, attacked int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropped[round], t.late[round], t.attacked[round]
}
