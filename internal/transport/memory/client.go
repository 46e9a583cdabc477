package memory

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
)

// Client is one connection to a Bus; it implements transport.Transport.
type Client struct {
	bus  *Bus
	sess *session
	opts ClientOptions

	// Guarded by bus.mu.
	subs   []*subscription
	closed bool
	shed   uint64
}

var _ transport.Transport = (*Client)(nil)

type subscription struct {
	c       *Client
	filter  string
	ch      chan transport.Message
	dropped atomic.Uint64
	done    bool // guarded by bus.mu
}

func (s *subscription) C() <-chan transport.Message { return s.ch }
func (s *subscription) Dropped() uint64             { return s.dropped.Load() }

// Unsubscribe removes the subscription and closes its channel.
func (s *subscription) Unsubscribe(ctx context.Context) error {
	b := s.c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.done {
		return nil
	}
	c := s.c
	for i, x := range c.subs {
		if x == s {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	s.done = true
	close(s.ch)
	if c.closed {
		return nil
	}
	for _, x := range c.subs {
		if x.filter == s.filter {
			return nil // the broker-side subscription is still in use
		}
	}
	delete(c.sess.filters, s.filter)
	b.subs.remove(s.filter, c.sess)
	return nil
}

// Shed counts messages this client's full queues discarded.
func (c *Client) Shed() uint64 {
	c.bus.mu.Lock()
	defer c.bus.mu.Unlock()
	return c.shed
}

// Identity returns the identity the client connected with.
func (c *Client) Identity() topics.Identity { return c.opts.Identity }

// Publish delivers payload to every matching subscription. A publish the
// ACL denies is dropped and reported as transport.ErrNotAuthorized.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	if err := transport.ValidateTopic(topic); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	b := c.bus
	if len(payload) > b.cfg.MaxPayload {
		b.mu.Lock()
		b.stats.TooLarge++
		b.mu.Unlock()
		return fmt.Errorf("publish %s: %d bytes over limit %d: %w", topic, len(payload), b.cfg.MaxPayload, transport.ErrTooLarge)
	}
	p := append([]byte(nil), payload...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return fmt.Errorf("publish %s: %w", topic, transport.ErrClosed)
	}
	if !topics.Allowed(c.opts.Identity, topics.Publish, topic) {
		b.stats.Denied++
		b.log.Info("publish denied", zap.String("client", c.opts.ClientID), zap.String("topic", topic))
		return fmt.Errorf("publish %s by %s: %w", topic, c.opts.ClientID, transport.ErrNotAuthorized)
	}
	b.publishLocked(topic, p, opts.Retain)
	return nil
}

// Subscribe registers filter. Retained messages matching it are delivered
// first, then messages the session kept while the client was away.
func (c *Client) Subscribe(ctx context.Context, filter string) (transport.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if err := transport.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("subscribe %s: %w", filter, transport.ErrClosed)
	}
	if !topics.Allowed(c.opts.Identity, topics.Subscribe, filter) {
		b.stats.Denied++
		b.log.Info("subscribe denied", zap.String("client", c.opts.ClientID), zap.String("filter", filter))
		return nil, fmt.Errorf("subscribe %s by %s: %w", filter, c.opts.ClientID, transport.ErrNotAuthorized)
	}
	s := &subscription{c: c, filter: filter, ch: make(chan transport.Message, c.opts.QueueSize)}
	c.subs = append(c.subs, s)
	if _, ok := c.sess.filters[filter]; !ok {
		c.sess.filters[filter] = struct{}{}
		b.subs.add(filter, c.sess)
	}
	for topic, payload := range b.retained {
		if transport.Match(filter, topic) {
			c.offerLocked(s, transport.Message{Topic: topic, Payload: payload, Retained: true})
		}
	}
	// Hand over what the session kept for this filter, in order.
	kept := c.sess.pending[:0]
	for _, m := range c.sess.pending {
		if transport.Match(filter, m.Topic) {
			c.offerLocked(s, m) // shed and counted when the queue is full
			continue
		}
		kept = append(kept, m)
	}
	clear(c.sess.pending[len(kept):])
	c.sess.pending = kept
	return s, nil
}

// offerLocked puts msg into s's queue without blocking.
func (c *Client) offerLocked(s *subscription, msg transport.Message) bool {
	select {
	case s.ch <- msg:
		c.bus.stats.Delivered++
		return true
	default:
		s.dropped.Add(1)
		c.shed++
		c.bus.stats.Shed++
		return false
	}
}

// deliverLocked hands a routed message to the client's matching
// subscriptions. A full queue sheds the message (counted), as the MQTT
// client does: an MQTT 3.1.1 broker would not resend it on a live
// connection either. A message no subscription matches yet (the session
// outlived an earlier client) stays in the session until the next
// Subscribe.
func (c *Client) deliverLocked(msg transport.Message) {
	matched := false
	for _, s := range c.subs {
		if transport.Match(s.filter, msg.Topic) {
			matched = true
			c.offerLocked(s, msg)
		}
	}
	if !matched {
		c.bus.queueLocked(c.sess, msg)
	}
}

// Close disconnects cleanly: no will is sent. A persistent session keeps
// its subscriptions and queues messages until the client id reconnects.
func (c *Client) Close() error {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return nil
	}
	c.disconnectLocked()
	if !c.sess.persistent {
		b.dropSessionLocked(c.sess)
	}
	return nil
}

// Kill simulates an abrupt network loss: the bus publishes the client's
// will, then treats the client as disconnected.
func (c *Client) Kill() {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return
	}
	c.disconnectLocked()
	if !c.sess.persistent {
		b.dropSessionLocked(c.sess)
	}
	if w := c.opts.Will; w != nil {
		b.stats.WillsSent++
		b.publishLocked(w.Topic, w.Payload, w.Retain)
	}
}

// disconnectLocked closes the client's queues and detaches it from its
// session.
func (c *Client) disconnectLocked() {
	c.closed = true
	for _, s := range c.subs {
		s.done = true
		close(s.ch)
	}
	c.subs = nil
	if c.sess.client == c {
		c.sess.client = nil
	}
}
