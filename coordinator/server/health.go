package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Health is what /healthz and /readyz report.
type Health struct {
	// Ready: Run has restored its state and is serving.
	Ready bool
	// OK: ready, hearing the broker and keeping up.
	OK bool
	// Problems say why not OK, one line each.
	Problems []string
	Inbox    InboxStats
	// ProbeRTTMs is the round trip of the last probe through the broker
	// (0: none yet, or probing is off).
	ProbeRTTMs int64
}

// health tracks the loop and the broker probe. Its methods are safe from
// any goroutine.
type health struct {
	clk clock.Clock
	log *zap.Logger

	mu        sync.Mutex
	busySince time.Time // the loop started an event (zero: waiting)
	// Probes: the oldest sent and not yet seen (zero: none outstanding),
	// the last sequence number sent and seen.
	unanswered time.Time
	sent, seen uint64
	rtt        time.Duration
	bad        bool // last report, to log transitions once
}

func newHealth(clk clock.Clock, log *zap.Logger) *health {
	return &health{clk: clk, log: log}
}

func (h *health) busy() {
	now := h.clk.Now()
	h.mu.Lock()
	h.busySince = now
	h.mu.Unlock()
}

func (h *health) idle() {
	h.mu.Lock()
	h.busySince = time.Time{}
	h.mu.Unlock()
}

// Health reports whether the coordinator is hearing the broker and keeping
// up with what it hears. A change of verdict is logged once, at warning
// level when it turns bad.
func (s *Server) Health() Health {
	h := s.health
	now := s.clk.Now()
	st := s.in.stats()
	hl := Health{Inbox: st}
	select {
	case <-s.started:
		hl.Ready = true
	default:
		hl.Problems = append(hl.Problems, "not serving yet (restoring state)")
	}
	stall := s.cfg.StallTimeout
	if st.OldestMs > stall.Milliseconds() {
		hl.Problems = append(hl.Problems, fmt.Sprintf("cannot keep up: the oldest inbound message has waited %d ms (limit %d ms)", st.OldestMs, stall.Milliseconds()))
	}
	if err := s.in.err(); err != nil {
		hl.Problems = append(hl.Problems, "not receiving: "+err.Error())
	}
	h.mu.Lock()
	if !h.busySince.IsZero() && now.Sub(h.busySince) > stall {
		hl.Problems = append(hl.Problems, fmt.Sprintf("the event loop has been busy with one event for %v", now.Sub(h.busySince).Round(time.Millisecond)))
	}
	if !h.unanswered.IsZero() && now.Sub(h.unanswered) > s.cfg.ProbeTimeout {
		hl.Problems = append(hl.Problems, fmt.Sprintf("deaf: a probe published through the broker %v ago has not come back (limit %v)",
			now.Sub(h.unanswered).Round(time.Millisecond), s.cfg.ProbeTimeout))
	}
	hl.ProbeRTTMs = h.rtt.Milliseconds()
	hl.OK = len(hl.Problems) == 0
	changed := h.bad == hl.OK
	h.bad = !hl.OK
	h.mu.Unlock()
	if changed && hl.Ready {
		if hl.OK {
			s.log.Info("coordinator healthy again")
		} else {
			s.log.Warn("coordinator unhealthy", zap.Strings("problems", hl.Problems))
		}
	}
	return hl
}

// AdminHealth is Health for the admin API's /healthz and /readyz.
func (s *Server) AdminHealth() admin.HealthDoc {
	h := s.Health()
	return admin.HealthDoc{Ready: h.Ready, Problems: h.Problems}
}

// MetricsCollector exports the inbox counters and the health verdict.
func (s *Server) MetricsCollector() prometheus.Collector { return newHealthCollector(s) }

// shedCounter is implemented by transports that count messages they shed
// on a full queue (mqtt.Client, memory.Client).
type shedCounter interface{ Shed() uint64 }

// inboundDoc is the status document's view of the inbox and health.
func (s *Server) inboundDoc() *admin.InboundDoc {
	h := s.Health()
	doc := &admin.InboundDoc{Healthy: h.OK, Problems: h.Problems, Queued: h.Inbox.Queued, Shed: h.Inbox.Shed,
		Accepted: h.Inbox.Accepted, ProbeRTTMs: h.ProbeRTTMs}
	if doc.Problems == nil {
		doc.Problems = []string{}
	}
	if sc, ok := s.tr.(shedCounter); ok {
		doc.TransportShed = sc.Shed()
	}
	return doc
}

// startProbe subscribes to the coordinator's probe topic and publishes a
// probe there every ProbeInterval. A probe travels the same connection as
// every device message, so a broker that stopped delivering to the
// coordinator (a full in-flight window, a dead link, a broker that lost the
// subscription) leaves it unanswered.
func (s *Server) startProbe(ctx context.Context) (stop func(), err error) {
	topic := topics.Probe(s.cfg.Fleet)
	sub, err := s.tr.Subscribe(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("server: subscribe %s: %w", topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range sub.C() {
			if len(m.Payload) != 16 {
				continue
			}
			seq := binary.BigEndian.Uint64(m.Payload)
			sentAt := time.Unix(0, int64(binary.BigEndian.Uint64(m.Payload[8:])))
			s.health.probeSeen(seq, s.clk.Now().Sub(sentAt))
		}
	}()
	go func() {
		defer wg.Done()
		t := s.clk.After(0)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t:
			}
			t = s.clk.After(s.cfg.ProbeInterval)
			now := s.clk.Now()
			seq := s.health.probeSent(now)
			var b [16]byte
			binary.BigEndian.PutUint64(b[:], seq)
			binary.BigEndian.PutUint64(b[8:], uint64(now.UnixNano()))
			pctx, pcancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
			if err := s.tr.Publish(pctx, topic, b[:], transport.PublishOptions{}); err != nil && ctx.Err() == nil {
				s.log.Debug("probe publish failed", zap.Error(err))
			}
			pcancel()
			s.Health() // logs a change of verdict
		}
	}()
	return func() {
		cancel()
		_ = sub.Unsubscribe(context.WithoutCancel(ctx))
		wg.Wait()
	}, nil
}

func (h *health) probeSent(now time.Time) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent++
	if h.unanswered.IsZero() {
		h.unanswered = now
	}
	return h.sent
}

func (h *health) probeSeen(seq uint64, rtt time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq <= h.seen || seq > h.sent {
		return
	}
	h.seen = seq
	h.rtt = rtt
	if h.seen == h.sent {
		h.unanswered = time.Time{}
	} else {
		// Later probes are still out; the next one was sent at most one
		// interval after this one.
		h.unanswered = h.clk.Now()
	}
}

// retryAfter is the delay a shed device is asked to wait: 2 to 5 s, spread
// by device so that a crowd told to retry does not come back at once.
func retryAfter(dev string) uint32 {
	f := fnv.New32a()
	_, _ = f.Write([]byte(dev))
	return 2000 + f.Sum32()%3000
}

// retryLater tells each device whose results the inbox shed to resend them
// after a delay, at most once a second per device.
func (s *Server) retryLater(ctx context.Context) error {
	devs := s.in.takeRetry()
	if len(devs) == 0 {
		return nil
	}
	now := s.clk.Now()
	for _, d := range devs {
		if last, ok := s.retryTold[d]; ok && now.Sub(last) < time.Second {
			continue
		}
		if !s.devices.Approved(d) {
			continue // nobody we would answer
		}
		s.retryTold[d] = now
		ack := &fedgepb.Ack{Reason: "coordinator busy", RetryAfterMs: retryAfter(d)}
		if err := s.publish(ctx, topics.DeviceIn(s.cfg.Fleet, d, topics.KindAck), fedgepb.PayloadType_PAYLOAD_TYPE_ACK, ack, false); err != nil {
			s.log.Debug("retry-later ack", zap.String("device", d), zap.Error(err))
		}
	}
	if len(s.retryTold) > 4096 {
		for d, t := range s.retryTold {
			if now.Sub(t) > time.Second {
				delete(s.retryTold, d)
			}
		}
	}
	return nil
}

// sampled returns log limited to the first 5 entries of each message per
// second: refused messages are counted; the log only shows what they are.
func sampled(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 0)
	}))
}
