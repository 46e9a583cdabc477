package agent

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// ModelRef names a stored model version by its version and weights hash
// (the hash a task's base_model_hash refers to).
type ModelRef struct {
	Version     uint64
	WeightsHash []byte
}

// MachineConfig tunes the task state machine. Zero fields take defaults.
type MachineConfig struct {
	// ResendInterval is how often unacknowledged results are published
	// again while connected (default 30s); they are also published on every
	// EvStart.
	ResendInterval time.Duration
	// ModelWait is how long a task without a deadline waits for its base
	// model before it is refused (default 10 minutes).
	ModelWait time.Duration
}

func (c MachineConfig) withDefaults() MachineConfig {
	if c.ResendInterval <= 0 {
		c.ResendInterval = 30 * time.Second
	}
	if c.ModelWait <= 0 {
		c.ModelWait = 10 * time.Minute
	}
	return c
}

// Machine is the agent's task handling as a pure state machine: Step takes
// one event and returns the actions the driver must carry out, in order
// (persisting actions always come before the publish they protect). It
// reads no clock and does no IO; time arrives in EvStart, EvTask and
// EvTick. It is not safe for concurrent use.
type Machine struct {
	cfg        MachineConfig
	models     []ModelRef // stored versions, active first
	fetching   uint64     // version being fetched, 0 when idle
	next       *fedgepb.ModelManifest
	failed     uint64 // last version whose fetch or check failed
	failedWhy  string // why, and the weights hash it announced:
	failedHash []byte // a task waiting for those weights is dropped
	task       *fedgepb.RoundTask
	taskSince  time.Time
	running    bool
	pending    []Pending // ascending rounds
	done       []uint64  // ascending, bounded by MaxDoneRounds
	lastResend time.Time
	now        time.Time // latest time seen in an event
	retryAt    time.Time // earliest refetch of next after a transient failure
}

// NewMachine restores a machine from persisted state: the stored models
// (active first), the persisted task (nil if none), unacknowledged results
// and finished rounds.
func NewMachine(cfg MachineConfig, models []ModelRef, task *fedgepb.RoundTask, pending []Pending, done []uint64) *Machine {
	m := &Machine{cfg: cfg.withDefaults(), models: slices.Clone(models), task: task}
	m.pending = slices.Clone(pending)
	slices.SortFunc(m.pending, func(a, b Pending) int { return cmpU64(a.RoundID, b.RoundID) })
	for _, r := range done {
		m.done = addDone(m.done, r)
	}
	return m
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Event is an input of Machine.Step.
type Event interface{ event() }

// Events.
type (
	// EvStart: the agent (re)connected or restarted.
	EvStart struct{ Now time.Time }
	// EvTick: time passed.
	EvTick struct{ Now time.Time }
	// EvManifest: a manifest whose envelope and own signature verified.
	EvManifest struct{ Manifest *fedgepb.ModelManifest }
	// EvModelInstalled: the fetched model passed every check and is active.
	EvModelInstalled struct{ Manifest *fedgepb.ModelManifest }
	// EvModelFailed: fetching or checking a model failed. A Transient
	// failure (the transfer timed out) is retried after ResendInterval; any
	// other failure rejects the version for good.
	EvModelFailed struct {
		Manifest  *fedgepb.ModelManifest
		Reason    string
		Transient bool
	}
	// EvTask: a verified round task arrived.
	EvTask struct {
		Task *fedgepb.RoundTask
		Now  time.Time
	}
	// EvTaskDone: a task started by ActRun finished; Result is the sealed
	// result when Err is nil.
	EvTaskDone struct {
		Round  uint64
		Result Pending
		Err    error
	}
	// EvAck: a verified acknowledgement arrived.
	EvAck struct{ Ack *fedgepb.Ack }
)

func (EvStart) event()          {}
func (EvTick) event()           {}
func (EvManifest) event()       {}
func (EvModelInstalled) event() {}
func (EvModelFailed) event()    {}
func (EvTask) event()           {}
func (EvTaskDone) event()       {}
func (EvAck) event()            {}

// Action is an output of Machine.Step.
type Action interface{ action() }

// Actions.
type (
	// ActPersistTask: store the task so a restart resumes it.
	ActPersistTask struct{ Task *fedgepb.RoundTask }
	// ActRun: train or evaluate Task starting from stored model Version,
	// then report EvTaskDone.
	ActRun struct {
		Task    *fedgepb.RoundTask
		Version uint64
	}
	// ActCancel: stop the running task of Round (its EvTaskDone is ignored).
	ActCancel struct{ Round uint64 }
	// ActFetch: fetch, check and install the model of Manifest, then report
	// EvModelInstalled or EvModelFailed.
	ActFetch struct{ Manifest *fedgepb.ModelManifest }
	// ActFinish: atomically store Pending and delete its task.
	ActFinish struct{ Pending Pending }
	// ActPublish: publish a pending result (and offer its blob).
	ActPublish struct{ Pending Pending }
	// ActAcked: atomically delete the pending result of Round and record
	// the round as done.
	ActAcked struct {
		Round    uint64
		Accepted bool
		Reason   string
	}
	// ActDrop: delete the task of Round, record the round as done and
	// tell the coordinator the device refused it.
	ActDrop struct {
		Round  uint64
		Reason string
	}
	// ActIgnore: an input was not acted on; log and count it.
	ActIgnore struct{ What, Reason string }
)

func (ActPersistTask) action() {}
func (ActRun) action()         {}
func (ActCancel) action()      {}
func (ActFetch) action()       {}
func (ActFinish) action()      {}
func (ActPublish) action()     {}
func (ActAcked) action()       {}
func (ActDrop) action()        {}
func (ActIgnore) action()      {}

// Active returns the active model, if any.
func (m *Machine) Active() (ModelRef, bool) {
	if len(m.models) == 0 {
		return ModelRef{}, false
	}
	return m.models[0], true
}

// Task returns the current task (nil if none) and whether it is running.
func (m *Machine) Task() (*fedgepb.RoundTask, bool) { return m.task, m.running }

// PendingRounds returns the rounds of unacknowledged results.
func (m *Machine) PendingRounds() []uint64 {
	out := make([]uint64, len(m.pending))
	for i, p := range m.pending {
		out[i] = p.RoundID
	}
	return out
}

// Step applies one event.
func (m *Machine) Step(ev Event) []Action {
	switch e := ev.(type) {
	case EvStart:
		m.lastResend, m.now = e.Now, e.Now
		if m.task != nil && m.taskSince.IsZero() {
			m.taskSince = e.Now // a restored task waits ModelWait from the restart
		}
		acts := m.publishAll(nil)
		return m.tryStart(acts, e.Now)
	case EvTick:
		return m.tick(e.Now)
	case EvManifest:
		return m.manifest(e.Manifest)
	case EvModelInstalled:
		return m.installed(e.Manifest)
	case EvModelFailed:
		v := e.Manifest.Version
		if v == m.fetching {
			m.fetching = 0
		}
		if e.Transient {
			if m.next == nil || m.next.Version < v {
				m.next = e.Manifest
				m.retryAt = m.now.Add(m.cfg.ResendInterval)
			}
			return []Action{ActIgnore{What: "model fetch", Reason: fmt.Sprintf("v%d: %s (will retry)", v, e.Reason)}}
		}
		m.failed, m.failedWhy, m.failedHash = v, e.Reason, e.Manifest.WeightsHash
		acts := []Action{ActIgnore{What: "model", Reason: fmt.Sprintf("v%d: %s", v, e.Reason)}}
		return m.tryStart(m.fetchNext(acts), m.now)
	case EvTask:
		m.now = e.Now
		return m.newTask(e.Task, e.Now)
	case EvTaskDone:
		return m.taskDone(e)
	case EvAck:
		return m.ack(e.Ack)
	}
	panic(fmt.Sprintf("agent: unknown event %T", ev))
}

func (m *Machine) publishAll(acts []Action) []Action {
	for _, p := range m.pending {
		acts = append(acts, ActPublish{Pending: p})
	}
	return acts
}

func (m *Machine) tick(now time.Time) []Action {
	m.now = now
	var acts []Action
	if m.fetching == 0 && m.next != nil && !now.Before(m.retryAt) {
		acts = m.fetchNext(acts)
	}
	if len(m.pending) > 0 && now.Sub(m.lastResend) >= m.cfg.ResendInterval {
		m.lastResend = now
		acts = m.publishAll(acts)
	}
	return m.tryStart(acts, now)
}

// deadline is when a waiting task gives up on its base model.
func (m *Machine) deadline() time.Time {
	if m.task.DeadlineUnixMs > 0 {
		return time.UnixMilli(m.task.DeadlineUnixMs)
	}
	return m.taskSince.Add(m.cfg.ModelWait)
}

// tryStart starts the waiting task if its base model is stored, or drops
// it once its deadline has passed.
func (m *Machine) tryStart(acts []Action, now time.Time) []Action {
	if m.task == nil || m.running {
		return acts
	}
	for _, r := range m.models {
		if bytes.Equal(r.WeightsHash, m.task.BaseModelHash) {
			m.running = true
			return append(acts, ActRun{Task: m.task, Version: r.Version})
		}
	}
	if len(m.failedHash) > 0 && bytes.Equal(m.failedHash, m.task.BaseModelHash) && m.fetching == 0 && m.next == nil {
		// The version carrying the task's weights failed its checks and no
		// other version is on its way: drop the task now (the status sent
		// on a drop tells the coordinator) rather than at the deadline.
		round := m.task.RoundId
		m.task = nil
		m.done = addDone(m.done, round)
		return append(acts, ActDrop{Round: round, Reason: fmt.Sprintf("base model v%d failed its checks: %s", m.failed, m.failedWhy)})
	}
	if !now.IsZero() && now.After(m.deadline()) {
		round, base := m.task.RoundId, m.task.BaseModelHash
		m.task = nil
		m.done = addDone(m.done, round)
		return append(acts, ActDrop{Round: round, Reason: fmt.Sprintf("base model %x not available before the deadline", base[:min(len(base), 6)])})
	}
	return acts
}

func (m *Machine) activeVersion() uint64 {
	if len(m.models) == 0 {
		return 0
	}
	return m.models[0].Version
}

func (m *Machine) manifest(mf *fedgepb.ModelManifest) []Action {
	v := mf.Version
	switch {
	case v <= m.activeVersion():
		if v == m.activeVersion() {
			return nil // the retained manifest of the installed model
		}
		return []Action{ActIgnore{What: "manifest", Reason: fmt.Sprintf("v%d is older than installed v%d", v, m.activeVersion())}}
	case v == m.fetching || (m.next != nil && v == m.next.Version):
		return nil
	case v == m.failed:
		return []Action{ActIgnore{What: "manifest", Reason: fmt.Sprintf("v%d failed its checks before", v)}}
	case m.fetching != 0:
		if v > m.fetching && (m.next == nil || v > m.next.Version) {
			m.next = mf
		}
		return nil
	}
	m.fetching = v
	return []Action{ActFetch{Manifest: mf}}
}

func (m *Machine) fetchNext(acts []Action) []Action {
	if m.fetching != 0 || m.next == nil || m.now.Before(m.retryAt) {
		return acts
	}
	n := m.next
	m.next = nil
	if n.Version <= m.activeVersion() {
		return acts
	}
	m.fetching = n.Version
	return append(acts, ActFetch{Manifest: n})
}

func (m *Machine) installed(mf *fedgepb.ModelManifest) []Action {
	if mf.Version == m.fetching {
		m.fetching = 0
	}
	ref := ModelRef{Version: mf.Version, WeightsHash: mf.WeightsHash}
	m.models = slices.DeleteFunc(m.models, func(r ModelRef) bool { return r.Version == ref.Version })
	m.models = slices.Insert(m.models, 0, ref)
	if len(m.models) > KeepVersions {
		m.models = m.models[:KeepVersions]
	}
	acts := m.fetchNext(nil)
	return m.tryStart(acts, time.Time{})
}

func (m *Machine) isDone(round uint64) bool {
	_, ok := slices.BinarySearch(m.done, round)
	return ok
}

func (m *Machine) pendingFor(round uint64) (Pending, bool) {
	for _, p := range m.pending {
		if p.RoundID == round {
			return p, true
		}
	}
	return Pending{}, false
}

// supportedCodec reports whether the agent can encode updates with c.
func supportedCodec(c fedgepb.Codec) bool {
	switch c {
	case fedgepb.Codec_CODEC_FLOAT32, fedgepb.Codec_CODEC_FLOAT16, fedgepb.Codec_CODEC_INT8, fedgepb.Codec_CODEC_TOPK:
		return true
	}
	return false
}

func (m *Machine) newTask(t *fedgepb.RoundTask, now time.Time) []Action {
	r := t.RoundId
	if p, ok := m.pendingFor(r); ok {
		// The coordinator asks again: it may have lost our result.
		return []Action{ActPublish{Pending: p}}
	}
	if m.isDone(r) {
		return []Action{ActIgnore{What: "task", Reason: fmt.Sprintf("round %d already done", r)}}
	}
	var acts []Action
	if m.task != nil {
		switch {
		case m.task.RoundId == r:
			return nil // redelivery of the current task
		case m.task.RoundId > r:
			return []Action{ActIgnore{What: "task", Reason: fmt.Sprintf("round %d is older than current round %d", r, m.task.RoundId)}}
		case m.running:
			acts = append(acts, ActCancel{Round: m.task.RoundId})
		}
	}
	if t.Kind == fedgepb.TaskKind_TASK_KIND_TRAIN && !supportedCodec(t.Train.GetCodec()) {
		m.task, m.running = nil, false
		m.done = addDone(m.done, r)
		return append(acts, ActDrop{Round: r, Reason: fmt.Sprintf("codec %v not supported", t.Train.GetCodec())})
	}
	m.task, m.running, m.taskSince = t, false, now
	acts = append(acts, ActPersistTask{Task: t})
	return m.tryStart(acts, now)
}

func (m *Machine) taskDone(e EvTaskDone) []Action {
	if m.task == nil || m.task.RoundId != e.Round || !m.running {
		return []Action{ActIgnore{What: "task result", Reason: fmt.Sprintf("round %d is no longer current", e.Round)}}
	}
	m.task, m.running = nil, false
	if e.Err != nil {
		m.done = addDone(m.done, e.Round)
		return []Action{ActDrop{Round: e.Round, Reason: e.Err.Error()}}
	}
	p := e.Result
	if len(m.pending) == 0 {
		// The resend clock starts with this publish (m.now is at most a
		// tick old), not at the last resend, which may be long past: that
		// resent every result at the next tick, before its ack could come.
		m.lastResend = m.now
	}
	m.pending = append(m.pending, p)
	slices.SortFunc(m.pending, func(a, b Pending) int { return cmpU64(a.RoundID, b.RoundID) })
	return []Action{ActFinish{Pending: p}, ActPublish{Pending: p}}
}

func (m *Machine) ack(a *fedgepb.Ack) []Action {
	if a.RetryAfterMs > 0 {
		// The coordinator shed our results unprocessed: resend them all
		// after the delay it asked for instead of the resend interval.
		if len(m.pending) == 0 {
			return []Action{ActIgnore{What: "ack", Reason: "retry later, but nothing is pending"}}
		}
		m.lastResend = m.now.Add(time.Duration(a.RetryAfterMs)*time.Millisecond - m.cfg.ResendInterval)
		return []Action{ActIgnore{What: "ack", Reason: fmt.Sprintf("coordinator busy: resending %d results in %d ms", len(m.pending), a.RetryAfterMs)}}
	}
	for i, p := range m.pending {
		if p.RoundID == a.RoundId && bytes.Equal(p.MessageID, a.MessageId) {
			m.pending = slices.Delete(m.pending, i, i+1)
			m.done = addDone(m.done, a.RoundId)
			return []Action{ActAcked{Round: a.RoundId, Accepted: a.Accepted, Reason: a.Reason}}
		}
	}
	return []Action{ActIgnore{What: "ack", Reason: fmt.Sprintf("no pending result %x for round %d", a.MessageId, a.RoundId)}}
}
