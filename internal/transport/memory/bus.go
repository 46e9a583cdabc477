// Package memory is an in-process implementation of transport.Transport with
// the semantics fedge relies on from its MQTT broker: QoS 1 at-least-once
// delivery, retained messages, persistent sessions that queue messages while
// their client is away, last wills on an abrupt Kill, MQTT wildcard
// matching, the topics.Allowed ACL and a payload limit.
//
// A Bus plays the broker. It runs no goroutines: a Publish delivers to every
// matching subscriber's bounded queue on the publisher's goroutine, so a
// process can hold 100,000 simulated clients at the cost of their sessions
// and queues only (about 2 KB of heap per device with two subscriptions and
// queues of 2, measured by TestHundredThousandClients). Delivered payloads
// are shared between subscribers and must not be modified.
package memory

import (
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
)

// Defaults of Config and ClientOptions.
const (
	DefaultMaxPayload = 1<<20 + 64<<10 // the embedded broker's default
	DefaultMaxQueued  = 1000
	DefaultQueueSize  = 64
)

// Config configures a Bus. Zero fields take the defaults.
type Config struct {
	// MaxPayload is the largest accepted payload in bytes.
	MaxPayload int
	// MaxQueued bounds the messages a persistent session keeps while its
	// client is disconnected (or has not yet resubscribed); more are dropped
	// and counted in Stats.SessionDropped.
	MaxQueued int
}

// Stats are counters of a Bus.
type Stats struct {
	Published      uint64 // accepted publishes
	Delivered      uint64 // messages put into a subscription queue
	Denied         uint64 // publishes and subscribes denied by the ACL
	TooLarge       uint64 // publishes over MaxPayload
	Shed           uint64 // deliveries that found a subscription queue full (discarded, counted)
	SessionDropped uint64 // messages dropped because a session's queue was at MaxQueued
	WillsSent      uint64 // last wills published after Kill
}

// Bus is the in-memory broker. All methods are safe for concurrent use.
type Bus struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	sessions map[string]*session
	subs     trie
	retained map[string][]byte
	stats    Stats
}

// session is the broker-side state of one client id.
type session struct {
	id         string
	identity   topics.Identity
	persistent bool
	filters    map[string]struct{}
	client     *Client             // nil while disconnected
	pending    []transport.Message // queued for a disconnected client, or not taken by a full queue
}

// NewBus returns an empty bus.
func NewBus(cfg Config, log *zap.Logger) *Bus {
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Bus{
		cfg:      cfg,
		log:      log,
		sessions: make(map[string]*session),
		subs:     newTrie(),
		retained: make(map[string][]byte),
	}
}

// Stats returns a snapshot of the bus counters.
func (b *Bus) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Sessions returns the number of sessions (connected or persistent).
func (b *Bus) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// ClientOptions configure one client connection.
type ClientOptions struct {
	// Identity is who the client authenticates as; the ACL is checked
	// against it.
	Identity topics.Identity
	// ClientID names the session; default is derived from Identity.
	ClientID string
	// CleanSession discards the session on disconnect. The default (false)
	// keeps subscriptions and queues messages while the client is away.
	CleanSession bool
	// Will is published by the bus when the client is killed.
	Will *transport.Will
	// QueueSize bounds each subscription's queue (default 64).
	QueueSize int
}

// DefaultClientID is the client id used when ClientOptions.ClientID is
// empty: "coordinator-{fleet}" or "dev-{fleet}-{device}".
func DefaultClientID(id topics.Identity) string {
	if id.Role == topics.RoleCoordinator {
		return "coordinator-" + id.Fleet
	}
	return "dev-" + id.Fleet + "-" + id.ID
}

// Connect connects a client. A client already connected with the same
// ClientID is taken over: it is disconnected without its will, as a broker
// does.
func (b *Bus) Connect(opts ClientOptions) (*Client, error) {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID(opts.Identity)
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if w := opts.Will; w != nil {
		if err := transport.ValidateTopic(w.Topic); err != nil {
			return nil, fmt.Errorf("connect %s: will: %w", opts.ClientID, err)
		}
		if !topics.Allowed(opts.Identity, topics.Publish, w.Topic) {
			return nil, fmt.Errorf("connect %s: will topic %q: %w", opts.ClientID, w.Topic, transport.ErrNotAuthorized)
		}
		if len(w.Payload) > b.cfg.MaxPayload {
			return nil, fmt.Errorf("connect %s: will: %w", opts.ClientID, transport.ErrTooLarge)
		}
		w = &transport.Will{Topic: w.Topic, Payload: append([]byte(nil), w.Payload...), Retain: w.Retain}
		opts.Will = w
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[opts.ClientID]
	if s != nil && s.client != nil {
		s.client.disconnectLocked()
	}
	if s != nil && (opts.CleanSession || s.identity != opts.Identity) {
		b.dropSessionLocked(s)
		s = nil
	}
	if s == nil {
		s = &session{id: opts.ClientID, identity: opts.Identity, filters: make(map[string]struct{})}
		b.sessions[opts.ClientID] = s
	}
	s.persistent = !opts.CleanSession
	c := &Client{bus: b, sess: s, opts: opts}
	s.client = c
	return c, nil
}

// dropSessionLocked forgets a session and its subscriptions.
func (b *Bus) dropSessionLocked(s *session) {
	for f := range s.filters {
		b.subs.remove(f, s)
	}
	delete(b.sessions, s.id)
}

// publishLocked routes one accepted message to every matching session.
func (b *Bus) publishLocked(topic string, payload []byte, retain bool) {
	b.stats.Published++
	if retain {
		if len(payload) == 0 {
			delete(b.retained, topic)
		} else {
			b.retained[topic] = payload
		}
	}
	msg := transport.Message{Topic: topic, Payload: payload}
	b.subs.match(topic, func(s *session) {
		if s.client != nil {
			s.client.deliverLocked(msg)
			return
		}
		b.queueLocked(s, msg)
	})
}

// queueLocked keeps msg in a session for later delivery.
func (b *Bus) queueLocked(s *session, msg transport.Message) {
	if len(s.pending) >= b.cfg.MaxQueued {
		b.stats.SessionDropped++
		return
	}
	s.pending = append(s.pending, msg)
}
