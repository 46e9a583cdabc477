package server

import (
	"sync"
	"time"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
)

// The inbox is where the coordinator's subscriptions are drained to, at
// once, by one reader goroutine each, so that the transport's queues never
// fill (a full one sheds). The loop takes messages from it in turn. It holds
// one queue per kind of message, each with its own policy, and within a
// kind one small queue per device, served round-robin: a device that floods
// the coordinator gets its own share of the loop and no more, and fills only
// its own queue.
//
//   - status (hello, status, will): coalesced, the device's oldest queued
//     message is discarded for a new one. Presence is a state; only the
//     latest counts.
//   - enroll: the device's newest is refused when its queue is full.
//   - update and secagg: kept; a device whose queue is full, or a message
//     that would take the inbox past its byte budget, is refused and the
//     device is told to resend later (a "retry later" Ack). Devices keep
//     every result until it is acknowledged, so nothing acknowledged is
//     lost.
//
// Every device also has a token bucket per kind (rate and burst
// configurable); a message over it is refused before it is queued. Every refusal is counted
// by kind and reason.

// Inbound message kinds, in the order the loop serves them.
const (
	inStatus = iota
	inEnroll
	inUpdate
	inSecAgg
	numInKinds
)

// inKindNames name the kinds in metrics and the status document.
var inKindNames = [numInKinds]string{topics.KindStatus, topics.KindEnroll, topics.KindUpdate, topics.KindSecAgg}

// Reasons a message is shed by the inbox.
const (
	ShedRateLimited     = "rate_limited"      // over the device's token bucket
	ShedDeviceQueueFull = "device_queue_full" // the device's queue of this kind is full
	ShedCoalesced       = "coalesced"         // an older status replaced by a newer one
	ShedInboxFull       = "inbox_full"        // the inbox's byte or message budget is spent
	ShedBadTopic        = "bad_topic"         // a topic that is not dev/{id}/out/{kind}
)

// InboxConfig bounds the inbox. Zero fields take the defaults.
type InboxConfig struct {
	// PerDevice bounds each device's queue of one kind (default 8).
	PerDevice int
	// MaxMessages bounds the updates, and the secagg messages, queued
	// (default 65,536 each); status and enroll queues are bounded by the
	// devices' queues.
	MaxMessages int
	// MaxBytes bounds the payload bytes queued in all (default 256 MiB).
	MaxBytes int64
	// Rate is each device's sustained message rate per second and kind
	// (default 50) and Burst its bucket (default 200). A negative Rate
	// disables the limit.
	Rate  float64
	Burst float64
}

func (c *InboxConfig) setDefaults() {
	if c.PerDevice <= 0 {
		c.PerDevice = 8
	}
	if c.MaxMessages <= 0 {
		c.MaxMessages = 1 << 16
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 256 << 20
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.Burst <= 0 {
		c.Burst = 200
	}
}

// InboxStats is a snapshot of the inbox's counters.
type InboxStats struct {
	Queued   map[string]int               // by kind
	Bytes    int64                        // payload bytes queued
	Accepted map[string]uint64            // by kind: messages queued
	Shed     map[string]map[string]uint64 // by kind, then reason
	// OldestMs is the age of the oldest queued message (0: empty).
	OldestMs int64
}

type inbox struct {
	cfg   InboxConfig
	now   func() time.Time
	ready chan struct{} // has a token while messages are queued

	mu       sync.Mutex
	kinds    [numInKinds]kindQueue
	bytes    int64
	next     int // kind served next
	buckets  map[bucketKey]*bucket
	retry    map[string]struct{} // devices to tell "retry later"
	accepted [numInKinds]uint64
	shed     [numInKinds]map[string]uint64
	closed   error // why a reader stopped
}

type kindQueue struct {
	devs  map[string]*devQueue
	order []string // devices with queued messages, served round-robin
	n     int      // messages queued
}

type devQueue struct {
	msgs []inMsg
}

type inMsg struct {
	m  transport.Message
	at time.Time
}

type bucketKey struct {
	dev  string
	kind int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newInbox(cfg InboxConfig, now func() time.Time) *inbox {
	cfg.setDefaults()
	in := &inbox{cfg: cfg, now: now, ready: make(chan struct{}, 1), buckets: map[bucketKey]*bucket{}, retry: map[string]struct{}{}}
	for k := range in.kinds {
		in.kinds[k].devs = map[string]*devQueue{}
		in.shed[k] = map[string]uint64{}
	}
	return in
}

// kindOf maps a topic to its kind and device.
func kindOf(topic string) (kind int, device string, ok bool) {
	p, err := topics.Parse(topic)
	if err != nil || p.Device == "" || p.Direction != "out" || len(p.Rest) != 0 {
		return 0, "", false
	}
	for k, name := range inKindNames {
		if p.Kind == name {
			return k, p.Device, true
		}
	}
	return 0, "", false
}

// put queues m, or sheds it; it never blocks.
func (in *inbox) put(m transport.Message) {
	kind, dev, ok := kindOf(m.Topic)
	in.mu.Lock()
	defer in.mu.Unlock()
	if !ok {
		in.shed[inStatus][ShedBadTopic]++
		return
	}
	now := in.now()
	if !in.allowLocked(kind, dev, now) {
		in.refuseLocked(kind, dev, ShedRateLimited)
		return
	}
	q := &in.kinds[kind]
	d := q.devs[dev]
	if d == nil {
		d = &devQueue{}
		q.devs[dev] = d
	}
	size := int64(len(m.Payload))
	if len(d.msgs) >= in.cfg.PerDevice {
		if kind != inStatus {
			in.refuseLocked(kind, dev, ShedDeviceQueueFull)
			return
		}
		old := d.msgs[0]
		d.msgs = append(d.msgs[:0], d.msgs[1:]...)
		q.n--
		in.bytes -= int64(len(old.m.Payload))
		in.shed[kind][ShedCoalesced]++
	}
	// Status and enroll queues are bounded by the devices (PerDevice each);
	// MaxMessages bounds the kept kinds.
	kept := kind == inUpdate || kind == inSecAgg
	if (kept && q.n >= in.cfg.MaxMessages) || in.bytes+size > in.cfg.MaxBytes {
		in.refuseLocked(kind, dev, ShedInboxFull)
		if len(d.msgs) == 0 {
			delete(q.devs, dev)
		}
		return
	}
	if len(d.msgs) == 0 {
		q.order = append(q.order, dev)
	}
	d.msgs = append(d.msgs, inMsg{m: m, at: now})
	q.n++
	in.bytes += size
	in.accepted[kind]++
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// refuseLocked counts a shed message; devices whose results were refused
// are told to resend them later.
func (in *inbox) refuseLocked(kind int, dev, reason string) {
	in.shed[kind][reason]++
	if kind == inUpdate || kind == inSecAgg {
		in.retry[dev] = struct{}{}
	}
}

// allowLocked takes a token from dev's bucket for kind: one bucket per
// kind, so that a device whose status flaps still gets its updates in.
func (in *inbox) allowLocked(kind int, dev string, now time.Time) bool {
	if in.cfg.Rate < 0 {
		return true
	}
	key := bucketKey{dev, kind}
	b := in.buckets[key]
	if b == nil {
		b = &bucket{tokens: in.cfg.Burst, last: now}
		in.buckets[key] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(in.cfg.Burst, b.tokens+dt*in.cfg.Rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pop takes the next message: kinds in turn, devices of a kind in turn.
func (in *inbox) pop() (transport.Message, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for range numInKinds {
		k := in.next
		in.next = (in.next + 1) % numInKinds
		q := &in.kinds[k]
		if len(q.order) == 0 {
			continue
		}
		dev := q.order[0]
		q.order = q.order[1:]
		d := q.devs[dev]
		msg := d.msgs[0]
		d.msgs[0] = inMsg{}
		d.msgs = d.msgs[1:]
		q.n--
		in.bytes -= int64(len(msg.m.Payload))
		if len(d.msgs) == 0 {
			delete(q.devs, dev)
		} else {
			q.order = append(q.order, dev)
		}
		if len(q.order) == 0 {
			q.order = nil // let the backing array go after a burst
		}
		return msg.m, true
	}
	return transport.Message{}, false
}

// more re-arms ready when messages remain (after the loop took a batch).
func (in *inbox) more() {
	in.mu.Lock()
	n := 0
	for k := range in.kinds {
		n += in.kinds[k].n
	}
	in.mu.Unlock()
	if n > 0 {
		select {
		case in.ready <- struct{}{}:
		default:
		}
	}
}

// takeRetry returns and forgets the devices to tell "retry later".
func (in *inbox) takeRetry() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.retry) == 0 {
		return nil
	}
	devs := make([]string, 0, len(in.retry))
	for d := range in.retry {
		devs = append(devs, d)
	}
	clear(in.retry)
	return devs
}

// forget drops the rate state of devices idle for a minute (called from
// time to time, so the map does not grow with every device ever seen).
func (in *inbox) forget() {
	in.mu.Lock()
	defer in.mu.Unlock()
	cut := in.now().Add(-time.Minute)
	for d, b := range in.buckets {
		if b.last.Before(cut) {
			delete(in.buckets, d)
		}
	}
}

// fail records why a reader stopped and wakes the loop.
func (in *inbox) fail(err error) {
	in.mu.Lock()
	if in.closed == nil {
		in.closed = err
	}
	in.mu.Unlock()
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

func (in *inbox) err() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.closed
}

// stats returns a snapshot of the counters.
func (in *inbox) stats() InboxStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := InboxStats{Queued: map[string]int{}, Bytes: in.bytes, Accepted: map[string]uint64{}, Shed: map[string]map[string]uint64{}}
	var oldest time.Time
	for k, name := range inKindNames {
		q := &in.kinds[k]
		st.Queued[name] = q.n
		st.Accepted[name] = in.accepted[k]
		if len(in.shed[k]) > 0 {
			st.Shed[name] = map[string]uint64{}
			for r, n := range in.shed[k] {
				st.Shed[name][r] = n
			}
		}
		for _, d := range q.devs {
			if len(d.msgs) > 0 && (oldest.IsZero() || d.msgs[0].at.Before(oldest)) {
				oldest = d.msgs[0].at
			}
		}
	}
	if !oldest.IsZero() {
		st.OldestMs = max(1, in.now().Sub(oldest).Milliseconds())
	}
	return st
}

// drain reads sub into the inbox until it closes.
func (in *inbox) drain(sub transport.Subscription, onClose func()) {
	for m := range sub.C() {
		in.put(m)
	}
	onClose()
}
