// Package broker is fedge's embedded MQTT broker: mochi-mqtt with TCP and
// TLS (optionally mTLS) listeners and an in-process one (DialPipe, for
// simulated fleets), per-device credentials of which only salted hashes
// are kept, and the default-deny topic policy of
// topics.Allowed enforced on every publish, subscribe, delivery and last
// will. Device ids may not collide with the coordinator's (see
// topics.ValidateDeviceID); devices may retain only their blob descriptors
// (topics.RetainAllowed) and publish at most DevicePublishRate messages a
// second. Denied publishes and publishes over the payload limit are
// acknowledged and dropped (as Mosquitto does), counted in Stats and logged
// with their reason.
//
// A Broker is started once; to restart on the same address, Close it and
// Start a new one from the same Config. Sessions and retained messages live
// in memory and do not survive a restart.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fedge-dev/fedge/internal/topics"
)

// Defaults filled in by New.
const (
	// DefaultMaxPayload fits a 1 MiB blob chunk plus its envelope.
	DefaultMaxPayload = 1<<20 + 64<<10
	// DefaultConnectTimeout bounds TLS handshake plus CONNECT.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultSessionExpiry is how long a disconnected persistent session
	// (subscriptions and queued QoS 1 messages) is kept.
	DefaultSessionExpiry = 72 * time.Hour
	// DefaultMaxQueued is the default of Config.MaxQueued (mochi's own
	// default). A connected subscriber that falls this far behind loses
	// QoS 1 messages, so it must cover the largest burst one client
	// receives, e.g. the coordinator collecting update chunks of a round.
	DefaultMaxQueued = 8192
	// maxMQTTPayload is the largest payload an MQTT packet can carry.
	maxMQTTPayload = 268435455 - 65535 - 7
	// packetOverhead is room for the fixed header, topic and packet id above
	// MaxPayload; packets larger than MaxPayload+packetOverhead close the
	// connection instead of being read.
	packetOverhead = 65535 + 16
	// maxMessageAge is the forced expiry of retained and queued messages, in
	// seconds: ten years, i.e. never in practice.
	maxMessageAge = 10 * 365 * 24 * 3600
)

// Config configures a Broker. The zero values of optional fields select the
// defaults above.
type Config struct {
	// Fleet is the fleet id (topics.ValidateID); only identities of this
	// fleet may connect.
	Fleet string
	// TCPAddr is the plain TCP listen address, e.g. "127.0.0.1:1883" or
	// "127.0.0.1:0"; "" means no TCP listener.
	TCPAddr string
	// TLSAddr is the TLS listen address; "" means no TLS listener.
	TLSAddr string
	// Pipe adds the in-process listener: clients in this process connect
	// with DialPipe over in-memory connections that need no socket or file
	// descriptor (a fleet simulator's thousands of devices). It has the
	// same authentication and topic policy as the other listeners.
	Pipe bool
	// TLS is the server config of the TLS listener. Set ClientAuth to
	// tls.RequireAndVerifyClientCert (and ClientCAs) for mTLS; a verified
	// client certificate's common name then identifies the client.
	TLS *tls.Config
	// Credentials says who may connect as what. Required; it may be changed
	// while the broker runs.
	Credentials *Credentials
	// MaxPayload is the largest publish payload accepted, in bytes.
	MaxPayload int
	// ConnectTimeout bounds the time from accept to a complete CONNECT.
	ConnectTimeout time.Duration
	// SessionExpiry is how long a disconnected persistent session is kept.
	SessionExpiry time.Duration
	// MaxQueued is how many QoS 1 messages the broker holds per client
	// (unacknowledged by a connected client, or queued for a disconnected
	// persistent session); more are dropped and counted in Stats. The
	// broker copies each payload per receiving client, so memory for a
	// client can reach MaxQueued x payload size: offline devices subscribed
	// to large fleet-wide messages are what this bounds. At most 65535.
	MaxQueued int
	// DevicePublishRate is the sustained number of publishes per second
	// each device (user name) may make, refilling a bucket of
	// DevicePublishBurst; publishes beyond it are dropped and counted in
	// Stats.RateLimited. Coordinators are not limited. Zero selects
	// DefaultDevicePublishRate; negative turns the limit off.
	DevicePublishRate float64
	// DevicePublishBurst is the bucket size of DevicePublishRate.
	DevicePublishBurst int
	// MaxDeviceRetained is how many retained messages one device may hold
	// at once (devices may retain only their blob descriptors, see
	// topics.RetainAllowed); more are dropped and counted in
	// Stats.RetainDenied.
	MaxDeviceRetained int
	// MaxDeviceRetainedPayload bounds the payload of a device's retained
	// message, in bytes.
	MaxDeviceRetainedPayload int
}

// ErrConfig wraps every configuration error returned by New.
var ErrConfig = errors.New("invalid broker config")

func (c *Config) fill() error {
	if err := topics.ValidateID(c.Fleet); err != nil {
		return fmt.Errorf("%w: fleet: %w", ErrConfig, err)
	}
	if c.TCPAddr == "" && c.TLSAddr == "" && !c.Pipe {
		return fmt.Errorf("%w: no listener (set TCPAddr, TLSAddr and/or Pipe)", ErrConfig)
	}
	if c.TLSAddr != "" && (c.TLS == nil || (len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil)) {
		return fmt.Errorf("%w: TLSAddr %q needs TLS with a server certificate", ErrConfig, c.TLSAddr)
	}
	if c.TLSAddr == "" && c.TLS != nil {
		return fmt.Errorf("%w: TLS config given but TLSAddr is empty", ErrConfig)
	}
	if c.TLSAddr != "" && c.TLSAddr == c.TCPAddr && !strings.HasSuffix(c.TCPAddr, ":0") {
		return fmt.Errorf("%w: TCPAddr and TLSAddr are both %q", ErrConfig, c.TCPAddr)
	}
	if c.Credentials == nil {
		return fmt.Errorf("%w: Credentials is nil (use NewCredentials)", ErrConfig)
	}
	switch {
	case c.MaxPayload == 0:
		c.MaxPayload = DefaultMaxPayload
	case c.MaxPayload < 0 || c.MaxPayload > maxMQTTPayload:
		return fmt.Errorf("%w: MaxPayload %d outside 1..%d", ErrConfig, c.MaxPayload, maxMQTTPayload)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	} else if c.ConnectTimeout < 0 {
		return fmt.Errorf("%w: negative ConnectTimeout", ErrConfig)
	}
	switch {
	case c.MaxQueued == 0:
		c.MaxQueued = DefaultMaxQueued
	case c.MaxQueued < 0 || c.MaxQueued > 65535:
		return fmt.Errorf("%w: MaxQueued %d outside 1..65535", ErrConfig, c.MaxQueued)
	}
	if c.DevicePublishRate == 0 {
		c.DevicePublishRate = DefaultDevicePublishRate
	}
	switch {
	case c.DevicePublishBurst == 0:
		c.DevicePublishBurst = DefaultDevicePublishBurst
	case c.DevicePublishBurst < 0:
		return fmt.Errorf("%w: negative DevicePublishBurst", ErrConfig)
	}
	switch {
	case c.MaxDeviceRetained == 0:
		c.MaxDeviceRetained = DefaultMaxDeviceRetained
	case c.MaxDeviceRetained < 0:
		return fmt.Errorf("%w: negative MaxDeviceRetained", ErrConfig)
	}
	switch {
	case c.MaxDeviceRetainedPayload == 0:
		c.MaxDeviceRetainedPayload = min(DefaultMaxDeviceRetainedPayload, c.MaxPayload)
	case c.MaxDeviceRetainedPayload < 0 || c.MaxDeviceRetainedPayload > c.MaxPayload:
		return fmt.Errorf("%w: MaxDeviceRetainedPayload %d outside 1..MaxPayload (%d)", ErrConfig, c.MaxDeviceRetainedPayload, c.MaxPayload)
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	} else if c.SessionExpiry < time.Second {
		return fmt.Errorf("%w: SessionExpiry %v below one second", ErrConfig, c.SessionExpiry)
	}
	return nil
}

// Broker is an embedded MQTT broker. Its methods are safe for concurrent use.
type Broker struct {
	cfg     Config
	creds   *Credentials
	log     *zap.Logger
	denyLog *zap.Logger // sampled: a misbehaving client cannot flood the log
	stats   counters
	hook    *authHook
	now     func() time.Time // the rate limiter's clock

	logOff  atomic.Bool // silences mochi's logger after Close
	mu      sync.Mutex
	srv     *mqtt.Server
	tcp     *listener
	tlsL    *listener
	pipeL   *listener
	started bool
	closed  bool
}

// counters are the live values behind Stats.
type counters struct {
	connectsAccepted, connectsRefused   atomic.Uint64
	publishDenied, subscribeDenied      atomic.Uint64
	willDenied, oversized, tooLargeConn atomic.Uint64
	preAuthRejected                     atomic.Uint64
	rateLimited, retainDenied           atomic.Uint64
}

// Stats are cumulative counters since Start.
type Stats struct {
	Connected        int64  // clients connected now
	Sessions         int    // client ids with a session (connected or persistent)
	ConnectsAccepted uint64 // successful CONNECTs
	ConnectsRefused  uint64 // CONNECTs refused: credentials, client id, fleet or will
	PublishDenied    uint64 // publishes dropped by the ACL
	SubscribeDenied  uint64 // subscriptions (and deliveries) refused by the ACL
	WillDenied       uint64 // CONNECTs refused for their will topic, plus wills dropped after revocation
	Oversized        uint64 // publishes over MaxPayload dropped, plus connections closed for larger packets
	PreAuthRejected  uint64 // connections closed before CONNECT: not MQTT, CONNECT over 64 KiB, silent too long
	RateLimited      uint64 // device publishes dropped over DevicePublishRate
	RetainDenied     uint64 // device publishes dropped for their retain flag (topic, size or count)
	MessagesReceived int64  // PUBLISH packets received
	MessagesSent     int64  // PUBLISH packets sent
	QueueDropped     int64  // QoS 1 messages dropped because a client held MaxQueued already
	WritesDropped    int64  // messages dropped because a client's write queue was full
}

// New validates cfg and returns a broker that is not yet listening. log may
// be nil (nothing is logged).
func New(cfg Config, log *zap.Logger) (*Broker, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	b := &Broker{cfg: cfg, creds: cfg.Credentials, log: log, now: time.Now}
	b.denyLog = log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 20, 100)
	}))
	b.hook = &authHook{b: b}
	return b, nil
}

// Start binds the listeners and returns once they accept connections.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("broker already started or closed (create a new Broker to restart)")
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(b.cfg.MaxPayload + packetOverhead)
	caps.MaximumSessionExpiryInterval = uint32(b.cfg.SessionExpiry / time.Second)
	caps.MaximumInflight = uint16(b.cfg.MaxQueued)
	// mochi force-expires retained and in-flight messages older than this
	// (default one day, which would delete the retained model manifest).
	// Zero would disable expiry but also make MQTT 5 QoS 2 acks expire at
	// once, so use ten years.
	caps.MaximumMessageExpiryInterval = maxMessageAge
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 newSlog(b.log, &b.logOff),
		SysTopicResendInterval: 60,
	})
	b.hook.srv = srv
	if err := srv.AddHook(b.hook, nil); err != nil {
		return fmt.Errorf("add auth hook: %w", err)
	}
	// A failed Start leaves nothing bound, so the caller may retry it.
	fail := func(err error) error {
		_ = srv.Close()
		b.tcp, b.tlsL, b.pipeL = nil, nil, nil
		return err
	}
	onErr := func(err error) { b.countConnErr(err) }
	// Disconnect a listener's clients from one snapshot of the client map
	// (GetAll takes the lock once); see listener.closeClients.
	closeClients := func(id string) {
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	}
	if b.cfg.TCPAddr != "" {
		b.tcp = &listener{id: "tcp", addr: b.cfg.TCPAddr, connectTimeout: b.cfg.ConnectTimeout, log: b.log, onErr: onErr, closeClients: closeClients}
		if err := srv.AddListener(b.tcp); err != nil {
			return fail(fmt.Errorf("listen tcp %s: %w", b.cfg.TCPAddr, err))
		}
	}
	if b.cfg.TLSAddr != "" {
		b.tlsL = &listener{id: "tls", addr: b.cfg.TLSAddr, tls: b.cfg.TLS, connectTimeout: b.cfg.ConnectTimeout, log: b.log, onErr: onErr, closeClients: closeClients}
		if err := srv.AddListener(b.tlsL); err != nil {
			return fail(fmt.Errorf("listen tls %s: %w", b.cfg.TLSAddr, err))
		}
	}
	if b.cfg.Pipe {
		b.pipeL = &listener{id: "pipe", pipe: newPipeListener(), connectTimeout: b.cfg.ConnectTimeout, log: b.log, onErr: onErr, closeClients: closeClients}
		if err := srv.AddListener(b.pipeL); err != nil {
			return fail(fmt.Errorf("in-process listener: %w", err))
		}
	}
	if err := srv.Serve(); err != nil {
		return fail(fmt.Errorf("start mqtt server: %w", err))
	}
	b.srv = srv
	b.started = true
	b.log.Info("broker listening", zap.String("fleet", b.cfg.Fleet),
		zap.String("tcp", b.tcpAddrLocked()), zap.String("tls", b.tlsAddrLocked()))
	return nil
}

// TCPAddr is the bound TCP address ("127.0.0.1:54321"), or "" without a TCP
// listener. Before Start it is the configured address.
func (b *Broker) TCPAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tcpAddrLocked()
}

// tcpAddrLocked is TCPAddr for callers holding b.mu.
func (b *Broker) tcpAddrLocked() string {
	if b.tcp != nil {
		return b.tcp.Address()
	}
	return b.cfg.TCPAddr
}

// DialPipe connects to the in-process listener (Config.Pipe) and returns
// the client's end of the connection, on which the client speaks MQTT as
// over TCP. It fails with ErrPipeClosed when the broker has no in-process
// listener, is not started or is closed.
func (b *Broker) DialPipe(ctx context.Context) (net.Conn, error) {
	b.mu.Lock()
	l := b.pipeL
	ok := b.started && !b.closed
	b.mu.Unlock()
	if l == nil || !ok {
		return nil, fmt.Errorf("broker: dial: %w", ErrPipeClosed)
	}
	c, err := l.pipe.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("broker: dial: %w", err)
	}
	return c, nil
}

// TLSAddr is the bound TLS address, or "" without a TLS listener.
func (b *Broker) TLSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tlsAddrLocked()
}

func (b *Broker) tlsAddrLocked() string {
	if b.tlsL != nil {
		return b.tlsL.Address()
	}
	return b.cfg.TLSAddr
}

// Close disconnects every client and releases the listen ports before it
// returns. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.srv == nil {
		b.closed = true
		return nil
	}
	b.closed = true
	err := b.srv.Close()
	b.logOff.Store(true)
	if err != nil {
		return fmt.Errorf("close broker: %w", err)
	}
	b.log.Info("broker stopped", zap.String("fleet", b.cfg.Fleet))
	return nil
}

// Disconnect closes every connection authenticated as username (a device
// id, coordinator name or certificate CN) and returns how many it closed.
// Call it after Credentials.Remove to cut a revoked client off at once
// rather than at its next publish or subscribe. Persistent sessions are
// kept until they expire; their wills are sent.
func (b *Broker) Disconnect(username string) int {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return 0
	}
	n := 0
	b.hook.sessions.Range(func(k, v any) bool {
		s := v.(*session)
		if s.user != username {
			return true
		}
		if cl, ok := srv.Clients.Get(k.(string)); ok && cl == s.cl && !cl.Closed() {
			cl.Stop(packets.ErrNotAuthorized)
			n++
		}
		return true
	})
	if n > 0 {
		b.log.Info("disconnected clients", zap.String("username", username), zap.Int("connections", n))
	}
	return n
}

// connDone returns a channel closed when the goroutine serving c is done.
// It is called from hooks, which run while b.mu may be held by Close, so it
// reads the listeners without the lock: they are set before the server
// serves and never change afterwards.
func (b *Broker) connDone(c net.Conn) (<-chan struct{}, bool) {
	if pc, ok := c.(*peekedConn); ok {
		c = pc.Conn
	}
	for _, l := range []*listener{b.tcp, b.tlsL, b.pipeL} {
		if l == nil {
			continue
		}
		if d, ok := l.done(c); ok {
			return d, true
		}
	}
	return nil, false
}

// Queued is the number of QoS 1 and 2 messages held for the session of
// clientID (sent and unacknowledged, or waiting while it is offline).
func (b *Broker) Queued(clientID string) int {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return 0
	}
	cl, ok := srv.Clients.Get(clientID)
	if !ok {
		return 0
	}
	return cl.State.Inflight.Len()
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	s := Stats{
		Sessions:         b.hook.sessionCount(),
		ConnectsAccepted: b.stats.connectsAccepted.Load(),
		ConnectsRefused:  b.stats.connectsRefused.Load(),
		PublishDenied:    b.stats.publishDenied.Load(),
		SubscribeDenied:  b.stats.subscribeDenied.Load(),
		WillDenied:       b.stats.willDenied.Load(),
		Oversized:        b.stats.oversized.Load() + b.stats.tooLargeConn.Load(),
		PreAuthRejected:  b.stats.preAuthRejected.Load(),
		RateLimited:      b.stats.rateLimited.Load(),
		RetainDenied:     b.stats.retainDenied.Load(),
	}
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv != nil {
		s.Connected = atomic.LoadInt64(&srv.Info.ClientsConnected)
		s.MessagesReceived = atomic.LoadInt64(&srv.Info.MessagesReceived)
		s.MessagesSent = atomic.LoadInt64(&srv.Info.MessagesSent)
		s.QueueDropped = atomic.LoadInt64(&srv.Info.InflightDropped)
		s.WritesDropped = atomic.LoadInt64(&srv.Info.MessagesDropped)
	}
	return s
}
