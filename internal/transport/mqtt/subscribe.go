package mqtt

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/transport"
)

// SUBACK return codes: MQTT 3.1.1 knows only 0x80 for a refusal; mochi
// also sends MQTT 5's "not authorized" and "packet identifier in use".
const (
	subackFailure       = 0x80
	subackNotAuthorized = 0x87
	subackIDInUse       = 0x91
)

// maxIDInUseRetries bounds SUBSCRIBE retries after "packet identifier in
// use": mochi (v2.7.9) keeps the packet ids of its own unacknowledged
// publishes and of the client's requests in one table, so a SUBSCRIBE can
// collide with a message the resumed session is redelivering. Every retry
// uses the next packet id.
const maxIDInUseRetries = 64

type subscription struct {
	c       *Client
	filter  string
	ch      chan transport.Message
	dropped atomic.Uint64
	done    bool // guarded by c.mu
}

func (s *subscription) C() <-chan transport.Message { return s.ch }
func (s *subscription) Dropped() uint64             { return s.dropped.Load() }

// close closes the channel; c.mu must be held.
func (s *subscription) close() {
	if !s.done {
		s.done = true
		close(s.ch)
	}
}

// Unsubscribe closes the channel at once and tells the broker unless
// another subscription of this client uses the same filter.
func (s *subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if s.done {
		c.mu.Unlock()
		return nil
	}
	c.removeLocked(s)
	s.close()
	shared := false
	for _, x := range c.subs {
		shared = shared || x.filter == s.filter
	}
	c.mu.Unlock()
	if shared {
		return nil
	}
	if err := wait(ctx, c.pc.Unsubscribe(s.filter), c.cfg.ConnectTimeout); err != nil {
		return fmt.Errorf("mqtt: unsubscribe %s: %w", s.filter, err)
	}
	return nil
}

func (c *Client) removeLocked(s *subscription) {
	for i, x := range c.subs {
		if x == s {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			return
		}
	}
}

// Publish sends payload at QoS 1 and waits for the broker's PUBACK. While
// the client is reconnecting the message waits in paho's store and is sent
// after the reconnect. An MQTT 3.1.1 broker drops a publish its ACL denies
// without telling the client, so Publish cannot report ErrNotAuthorized.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	if err := transport.ValidateTopic(topic); err != nil {
		return fmt.Errorf("mqtt: publish: %w", err)
	}
	if len(payload) > c.cfg.MaxPayload {
		return fmt.Errorf("mqtt: publish %s: %d bytes over limit %d: %w", topic, len(payload), c.cfg.MaxPayload, transport.ErrTooLarge)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("mqtt: publish %s: %w", topic, transport.ErrClosed)
	}
	// paho keeps the slice until the PUBACK; copy so the caller may reuse it.
	p := append([]byte(nil), payload...)
	tok := c.pc.Publish(topic, 1, opts.Retain, p)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt: publish %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt: publish %s: %w", topic, ctx.Err())
	}
}

// Subscribe subscribes to filter at QoS 1. A SUBACK failure code (the
// broker's ACL refused it) is reported as transport.ErrNotAuthorized.
func (c *Client) Subscribe(ctx context.Context, filter string) (transport.Subscription, error) {
	if err := transport.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("mqtt: subscribe: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("mqtt: subscribe %s: %w", filter, transport.ErrClosed)
	}
	// Room for the held messages it takes over on top of QueueSize: they
	// were acknowledged and have nowhere else to go.
	held := 0
	for _, m := range c.held {
		if transport.Match(filter, m.Topic) {
			held++
		}
	}
	s := &subscription{c: c, filter: filter, ch: make(chan transport.Message, c.cfg.QueueSize+held)}
	// Registered before the SUBSCRIBE so retained messages that the broker
	// sends right after it find their queue, behind the held messages of a
	// resumed session, which are older.
	c.subs = append(c.subs, s)
	c.releaseHeldLocked(s)
	c.mu.Unlock()

	if err := c.subscribe(ctx, filter); err != nil {
		c.mu.Lock()
		c.removeLocked(s)
		s.close()
		c.mu.Unlock()
		return nil, fmt.Errorf("mqtt: subscribe %s: %w", filter, err)
	}
	return s, nil
}

// subscribe sends one SUBSCRIBE at QoS 1 and interprets the SUBACK.
func (c *Client) subscribe(ctx context.Context, filter string) error {
	for range maxIDInUseRetries {
		tok := c.pc.Subscribe(filter, 1, nil)
		if err := wait(ctx, tok, c.cfg.ConnectTimeout); err != nil {
			return err
		}
		code, ok := tok.(*paho.SubscribeToken).Result()[filter]
		switch {
		case !ok:
			return fmt.Errorf("no SUBACK code for %s", filter)
		case code == subackIDInUse:
			continue
		case code == subackFailure || code == subackNotAuthorized:
			return fmt.Errorf("broker refused (code %#x): %w", code, transport.ErrNotAuthorized)
		case code > 2:
			return fmt.Errorf("broker refused (code %#x)", code)
		}
		return nil
	}
	return fmt.Errorf("broker kept answering 'packet identifier in use' (%d tries)", maxIDInUseRetries)
}

// releaseHeldLocked moves held messages that match s into its queue, which
// Subscribe made large enough. c.mu must be held.
func (c *Client) releaseHeldLocked(s *subscription) {
	kept := c.held[:0]
	for _, m := range c.held {
		if s.done || !transport.Match(s.filter, m.Topic) {
			kept = append(kept, m)
			continue
		}
		if !offer(s, m) {
			c.shed.Add(1)
			c.warnLimited("held message shed: queue full", zap.String("topic", m.Topic))
		}
	}
	clear(c.held[len(kept):])
	c.held = kept
}

// offer puts msg into s's queue without blocking; c.mu must be held.
func offer(s *subscription, msg transport.Message) bool {
	select {
	case s.ch <- msg:
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

// onMessage is paho's handler for every incoming message. It never blocks
// and never publishes: it routes into queues and acknowledges every message
// it was handed while the client is open.
//
// A message that finds a queue full is acknowledged and shed, and counted
// in Stats.Shed and Subscription.Dropped. Leaving it unacknowledged instead
// would not get it delivered again: MQTT 3.1.1 brokers (Mosquitto 2.0,
// mochi) resend only when a session resumes, and until then count it
// against the client's in-flight window, so a burst bigger than the queue
// would leave the connection deaf with nothing to repair it. Consumers
// that must not lose messages drain their queue at once into queues of
// their own with a policy per kind of message (the coordinator does); the
// protocol repairs what is shed (devices resend unacknowledged results,
// blob transfers ask again for missing chunks, the round and model are
// retained).
func (c *Client) onMessage(_ paho.Client, pm paho.Message) {
	if len(pm.Payload()) > c.cfg.MaxPayload {
		c.tooLarge.Add(1)
		c.warnLimited("discarding oversized message", zap.String("topic", pm.Topic()),
			zap.Int("bytes", len(pm.Payload())), zap.Int("limit", c.cfg.MaxPayload))
		pm.Ack() // redelivery would not make it fit
		return
	}
	msg := transport.Message{Topic: pm.Topic(), Payload: pm.Payload(), Retained: pm.Retained()}
	c.mu.Lock()
	if c.closed || c.stopping {
		// Closing or closed: nobody will read the queues any more. Not
		// acknowledged, so a persistent session keeps the message for the
		// next connection (a message acknowledged into a dying queue was
		// lost: the conformance suite's PersistentSessionRedelivery failed
		// about once in 24 runs).
		c.mu.Unlock()
		return
	}
	matched, ok := false, true
	for _, s := range c.subs {
		if transport.Match(s.filter, msg.Topic) {
			matched = true
			ok = offer(s, msg) && ok
		}
	}
	if !matched {
		// Held until a Subscribe claims it. Acknowledged at once like a
		// queued message: holding the packet id would block mochi from
		// accepting our SUBSCRIBE (see maxIDInUseRetries).
		if len(c.held) < c.cfg.MaxHeld {
			c.held = append(c.held, msg)
			c.heldN.Add(1)
		} else {
			c.shed.Add(1)
		}
		c.mu.Unlock()
		pm.Ack()
		return
	}
	c.mu.Unlock()
	if ok {
		c.received.Add(1)
	} else {
		c.shed.Add(1)
		c.warnLimited("queue full, message shed", zap.String("topic", msg.Topic), zap.Uint64("shed_total", c.shed.Load()))
	}
	pm.Ack()
}

// warnLimited logs at warning level at most once per warnEvery; the
// counters carry the totals.
func (c *Client) warnLimited(msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := c.lastWarn.Load()
	if now-last < int64(warnEvery) || !c.lastWarn.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn(msg, fields...)
}

// warnEvery is the shortest interval between two warnings of a client about
// shed or oversized messages.
const warnEvery = 10 * time.Second
