// Package mqtt implements transport.Transport over MQTT 3.1.1 with
// paho.mqtt.golang: QoS 1, persistent sessions (CleanSession false),
// auto-reconnect with backoff and resubscription, last will, TLS and
// username/password authentication.
//
// paho calls the message handler on its own goroutine, in order. The handler
// here only routes the message into the bounded queue of each matching
// subscription and acknowledges it (manual ack). A message that finds a
// queue full is acknowledged, shed and counted (Stats.Shed,
// Subscription.Dropped): MQTT 3.1.1 brokers resend an unacknowledged
// message only when the session resumes, and count it against their
// in-flight window meanwhile (Mosquitto's max_inflight_messages, 20 by
// default), so leaving it unacknowledged would stop all delivery on a live
// connection after one burst. Messages that arrive for no subscription yet
// (a persistent session resumed before Subscribe was called again) are held
// in a bounded buffer, acknowledged like queued ones, until a matching
// Subscribe. Only a closed client leaves messages unacknowledged, for its
// session to keep.
//
// Workarounds for known problems of the libraries, each covered by tests:
// paho's MemoryStore shares packets between resume() and the writer
// (a data race, eclipse-paho/paho.mqtt.golang#703), so the store here
// keeps wire copies; paho ignores read errors of a locally closed socket,
// so DropConnection wraps the socket to report the drop; mochi v2.7.9 may
// answer a SUBSCRIBE with "packet identifier in use" while it redelivers a
// resumed session, so Subscribe retries with a new packet id.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/transport"
)

// Defaults of Config.
const (
	DefaultConnectTimeout       = 10 * time.Second
	DefaultKeepAlive            = 30 * time.Second
	DefaultMaxReconnectInterval = 10 * time.Second
	DefaultQueueSize            = 256
	DefaultMaxPayload           = 1<<20 + 64<<10 // the embedded broker's default

	DefaultMaxHeld = 1024
)

// Config configures a client. Zero fields take the defaults.
type Config struct {
	// BrokerURL is tcp://host:port, or tls:// (also ssl://, mqtts://) for TLS.
	BrokerURL string
	// ClientID names the broker session; required for persistent sessions.
	ClientID string
	Username string
	Password string
	// TLS is used for tls:// URLs (nil: system roots).
	TLS *tls.Config
	// Dial, if set, opens every network connection instead of dialling
	// BrokerURL's host (whose scheme and TLS are then ignored; the URL
	// still names the broker in errors): e.g. broker.Broker.DialPipe, the
	// embedded broker's in-process listener. The context is cancelled by
	// Close and after ConnectTimeout.
	Dial func(ctx context.Context) (net.Conn, error)
	// Will is published by the broker when the connection is lost without
	// a clean Close.
	Will *transport.Will
	// CleanSession discards the session on disconnect. The default (false)
	// keeps subscriptions and queued QoS 1 messages at the broker.
	CleanSession         bool
	ConnectTimeout       time.Duration
	KeepAlive            time.Duration
	MaxReconnectInterval time.Duration
	// QueueSize bounds each subscription's queue.
	QueueSize int
	// MaxPayload is the largest payload published or accepted; larger
	// incoming messages are acknowledged, counted and discarded.
	MaxPayload int
	// MaxHeld bounds messages held for a subscription not yet renewed after
	// a session resumed.
	MaxHeld int
}

func (c *Config) setDefaults() {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.MaxReconnectInterval <= 0 {
		c.MaxReconnectInterval = DefaultMaxReconnectInterval
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = DefaultMaxHeld
	}
}

// Stats are counters of one client.
type Stats struct {
	Connects uint64 // successful connections, the first included
	Lost     uint64 // connections lost
	Received uint64 // messages taken by at least one subscription
	Shed     uint64 // messages acknowledged and discarded because a queue (or the held buffer) was full
	TooLarge uint64 // incoming messages over MaxPayload, discarded
	Held     uint64 // messages held for a subscription not yet renewed
}

// Client is a connected MQTT client; it implements transport.Transport.
type Client struct {
	cfg Config
	log *zap.Logger
	pc  paho.Client

	mu     sync.Mutex
	subs   []*subscription
	held   []transport.Message
	closed bool
	conn   *dropConn // current network connection, for Kill and DropConnection
	killed bool      // refuse to dial again

	// stopping is set by Close and Kill before they wait for handlers: an
	// onConnect still resubscribing ends early and none starts after it.
	stopping bool
	stopCtx  context.Context
	stop     context.CancelFunc
	handlers sync.WaitGroup // running onConnect calls

	connects, lost, received, shed, tooLarge, heldN atomic.Uint64
	lastWarn                                        atomic.Int64 // unix ns of the last rate-limited warning
}

var _ transport.Transport = (*Client)(nil)

// Dial connects to the broker and returns once the first connection is up.
func Dial(ctx context.Context, cfg Config, log *zap.Logger) (*Client, error) {
	cfg.setDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	u, err := url.Parse(cfg.BrokerURL)
	if err != nil {
		return nil, fmt.Errorf("mqtt: broker url %q: %w", cfg.BrokerURL, err)
	}
	c := &Client{cfg: cfg, log: log.With(zap.String("client", cfg.ClientID))}
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	opts := paho.NewClientOptions().
		AddBroker(u.String()).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetProtocolVersion(4).
		SetCleanSession(cfg.CleanSession).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		SetOrderMatters(true). // handlers never block, so in-order dispatch costs nothing
		SetAutoAckDisabled(true).
		SetResumeSubs(false). // resubscribed explicitly in onConnect
		SetDefaultPublishHandler(c.onMessage).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onLost).
		SetCustomOpenConnectionFn(c.dial).
		SetStore(newCopyStore())
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	if w := cfg.Will; w != nil {
		opts.SetBinaryWill(w.Topic, w.Payload, 1, w.Retain)
	}
	c.pc = paho.NewClient(opts)
	tok := c.pc.Connect()
	if err := wait(ctx, tok, cfg.ConnectTimeout); err != nil {
		c.pc.Disconnect(0)
		return nil, fmt.Errorf("mqtt: connect %s as %s: %w", cfg.BrokerURL, cfg.ClientID, err)
	}
	return c, nil
}

// dial opens the network connection (TCP, TLS or Config.Dial) and
// remembers it so that Kill and DropConnection can cut it.
func (c *Client) dial(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	c.mu.Lock()
	killed := c.killed
	c.mu.Unlock()
	if killed {
		return nil, errors.New("client killed")
	}
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	switch {
	case c.cfg.Dial != nil:
		ctx, cancel := context.WithTimeout(c.stopCtx, c.cfg.ConnectTimeout)
		conn, err = c.cfg.Dial(ctx)
		cancel()
		if err == nil && conn == nil {
			err = errors.New("dial returned no connection")
		}
	case u.Scheme == "tcp" || u.Scheme == "mqtt":
		conn, err = d.Dial("tcp", u.Host)
	case u.Scheme == "tls" || u.Scheme == "ssl" || u.Scheme == "mqtts" || u.Scheme == "tcps":
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.cfg.TLS != nil {
			cfg = c.cfg.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		conn, err = tls.DialWithDialer(d, "tcp", u.Host, cfg)
	default:
		return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.killed {
		conn.Close()
		return nil, errors.New("client killed")
	}
	c.conn = &dropConn{Conn: conn}
	return c.conn, nil
}

// errDropped is what reads return after DropConnection or Kill.
var errDropped = errors.New("connection dropped")

// dropConn lets DropConnection look like a network failure to paho, which
// ignores read errors of a socket closed locally ("use of closed network
// connection") and would otherwise notice nothing until its next write.
type dropConn struct {
	net.Conn
	dropped atomic.Bool
}

func (d *dropConn) Read(b []byte) (int, error) {
	n, err := d.Conn.Read(b)
	if err != nil && d.dropped.Load() {
		err = errDropped
	}
	return n, err
}

func (d *dropConn) drop() {
	d.dropped.Store(true)
	d.Conn.Close()
}

// onConnect runs on its own goroutine after every (re)connect and renews
// the subscriptions, which a broker that lost its state no longer has.
func (c *Client) onConnect(pc paho.Client) {
	n := c.connects.Add(1)
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.handlers.Add(1) // under c.mu, so never after stopWaiting's Wait began
	defer c.handlers.Done()
	filters := make(map[string]struct{}, len(c.subs))
	for _, s := range c.subs {
		filters[s.filter] = struct{}{}
	}
	c.mu.Unlock()
	c.log.Debug("connected", zap.Uint64("connects", n), zap.Int("subscriptions", len(filters)))
	if n == 1 || len(filters) == 0 {
		return
	}
	for f := range filters {
		ctx, cancel := context.WithTimeout(c.stopCtx, c.cfg.ConnectTimeout)
		err := c.subscribe(ctx, f)
		cancel()
		if err != nil && c.stopCtx.Err() != nil {
			return // closing
		}
		if err != nil {
			// The connection dropped again; the next onConnect retries.
			c.log.Warn("resubscribe failed", zap.String("filter", f), zap.Error(err))
		}
	}
}

func (c *Client) onLost(_ paho.Client, err error) {
	c.lost.Add(1)
	c.log.Info("connection lost", zap.Error(err))
}

// wait waits for a paho token, the context or the timeout.
func wait(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("timed out after %v", timeout)
	}
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Connects: c.connects.Load(),
		Lost:     c.lost.Load(),
		Received: c.received.Load(),
		Shed:     c.shed.Load(),
		TooLarge: c.tooLarge.Load(),
		Held:     c.heldN.Load(),
	}
}

// Shed counts messages acknowledged and discarded on a full queue.
func (c *Client) Shed() uint64 { return c.shed.Load() }

// Close disconnects cleanly (the will is not sent) and closes every
// subscription's channel. The broker keeps a persistent session.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.stopWaiting()
	c.pc.Disconnect(250)
	c.shutdown()
	return nil
}

// stopWaiting stops onConnect handlers from starting, cancels a running
// resubscription and waits for it, so that nothing runs after Close.
func (c *Client) stopWaiting() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.stop()
	c.handlers.Wait()
}

// Kill simulates an abrupt network loss: the socket is closed without a
// DISCONNECT, so the broker publishes the will, and the client does not
// reconnect. Meant for tests.
func (c *Client) Kill() {
	c.mu.Lock()
	c.killed = true
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.drop()
	}
	c.stopWaiting()
	c.pc.Disconnect(0)
	c.shutdown()
}

// DropConnection closes the socket without a DISCONNECT; the client then
// reconnects by itself. Meant for tests.
func (c *Client) DropConnection() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.drop()
	}
}

// shutdown closes the subscription channels once.
func (c *Client) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, s := range c.subs {
		s.close()
	}
	c.subs = nil
	c.held = nil
}
