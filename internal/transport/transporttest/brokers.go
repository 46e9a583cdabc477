package transporttest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/mosquittotest"
	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
)

// CoordinatorUser is the user name the broker helpers give the coordinator.
const CoordinatorUser = "coordinator"

// MQTTBroker is a broker under test that MQTT clients can dial.
type MQTTBroker interface {
	// ClientConfig returns the mqtt.Config (URL, credentials, TLS) of an
	// identity; the caller sets the client id and other options.
	ClientConfig(id topics.Identity) mqtt.Config
	// Restart restarts the broker on the same address.
	Restart(t testing.TB)
}

// BrokerOptions configure the broker helpers.
type BrokerOptions struct {
	Fleet string
	// Devices get credentials (their id is their user name), in addition
	// to the suite's Devices and the coordinator.
	Devices []string
	TLS     bool
	// MaxPayload is the broker's payload limit (0: the broker default).
	MaxPayload int
	// Pipe makes clients of the embedded broker connect through its
	// in-process listener (broker.Broker.DialPipe) instead of TCP.
	Pipe bool
}

func (o BrokerOptions) devices() []string {
	return append(append([]string(nil), Devices...), o.Devices...)
}

func userOf(id topics.Identity) string {
	if id.Role == topics.RoleDevice {
		return id.ID
	}
	return CoordinatorUser
}

// Embedded is the fleet's embedded broker (internal/broker) started for a
// test. Restart replaces it with a fresh instance on the same address: all
// sessions, retained and in-flight messages are lost.
type Embedded struct {
	t        testing.TB
	pipe     bool
	cfg      broker.Config
	password map[string]string
	tls      *tls.Config

	mu sync.Mutex
	b  *broker.Broker
}

// StartEmbedded starts an embedded broker on a free loopback port; it is
// closed when the test ends.
func StartEmbedded(t testing.TB, opts BrokerOptions) *Embedded {
	t.Helper()
	e := &Embedded{t: t, pipe: opts.Pipe, password: map[string]string{}}
	creds := broker.NewCredentials()
	add := func(user string, id topics.Identity) {
		secret, password, err := broker.GenerateSecret()
		if err != nil {
			t.Fatal(err)
		}
		if err := creds.Add(user, secret, id); err != nil {
			t.Fatalf("credentials of %s: %v", user, err)
		}
		e.password[user] = password
	}
	add(CoordinatorUser, topics.Identity{Role: topics.RoleCoordinator, Fleet: opts.Fleet})
	for _, d := range opts.devices() {
		add(d, topics.Identity{Role: topics.RoleDevice, ID: d, Fleet: opts.Fleet})
	}
	e.cfg = broker.Config{Fleet: opts.Fleet, Credentials: creds, MaxPayload: opts.MaxPayload, TCPAddr: "127.0.0.1:0"}
	if opts.Pipe {
		e.cfg.TCPAddr, e.cfg.Pipe = "", true
	}
	if opts.TLS {
		pki, err := tlsutil.WritePKI(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := pki.ServerConfig(false)
		if err != nil {
			t.Fatal(err)
		}
		if e.tls, err = pki.ClientConfig(""); err != nil {
			t.Fatal(err)
		}
		e.cfg.TCPAddr, e.cfg.TLSAddr, e.cfg.TLS = "", "127.0.0.1:0", srv
	}
	e.start(t)
	// Restarts reuse the port picked now.
	switch {
	case opts.Pipe:
	case opts.TLS:
		e.cfg.TLSAddr = e.b.TLSAddr()
	default:
		e.cfg.TCPAddr = e.b.TCPAddr()
	}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		_ = e.b.Close()
	})
	return e
}

func (e *Embedded) start(t testing.TB) {
	b, err := broker.New(e.cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	for i := 0; ; i++ { // the old listener's port may take a moment to free
		if err = b.Start(); err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	e.mu.Lock()
	e.b = b
	e.mu.Unlock()
}

// Broker returns the running broker.
func (e *Embedded) Broker() *broker.Broker {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.b
}

// Restart closes the broker and starts a new one on the same address.
func (e *Embedded) Restart(t testing.TB) {
	if err := e.Broker().Close(); err != nil {
		t.Fatalf("close broker: %v", err)
	}
	e.start(t)
}

// ClientConfig implements MQTTBroker.
func (e *Embedded) ClientConfig(id topics.Identity) mqtt.Config {
	cfg := mqtt.Config{
		BrokerURL: "tcp://" + e.cfg.TCPAddr,
		Username:  userOf(id),
		Password:  e.password[userOf(id)],
	}
	if e.tls != nil {
		cfg.BrokerURL, cfg.TLS = "tls://"+e.cfg.TLSAddr, e.tls.Clone()
	}
	if e.pipe {
		// Dial whichever broker runs now: Restart replaces it.
		cfg.BrokerURL = "pipe://embedded"
		cfg.Dial = func(ctx context.Context) (net.Conn, error) { return e.Broker().DialPipe(ctx) }
	}
	return cfg
}

// Mosquitto is a real Mosquitto (internal/mosquittotest) with the fleet's
// ACL. Its Restart keeps sessions (persistence file).
type Mosquitto struct {
	*mosquittotest.Instance
}

// StartMosquitto starts Mosquitto, skipping the test when the binary is
// missing unless FEDGE_REQUIRE_EXTERNAL is set.
func StartMosquitto(t testing.TB, opts BrokerOptions) *Mosquitto {
	t.Helper()
	users := []mosquittotest.User{{Name: CoordinatorUser, Password: randomPassword(t),
		Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: opts.Fleet}}}
	for _, d := range opts.devices() {
		users = append(users, mosquittotest.User{Name: d, Password: randomPassword(t),
			Identity: topics.Identity{Role: topics.RoleDevice, ID: d, Fleet: opts.Fleet}})
	}
	return &Mosquitto{mosquittotest.Start(t, mosquittotest.Options{
		Fleet: opts.Fleet, Users: users, TLS: opts.TLS, MaxPayload: opts.MaxPayload,
	})}
}

func randomPassword(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ClientConfig implements MQTTBroker.
func (m *Mosquitto) ClientConfig(id topics.Identity) mqtt.Config {
	u, _ := m.User(userOf(id))
	return mqtt.Config{BrokerURL: m.URL(), Username: u.Name, Password: u.Password, TLS: m.TLSConfig(u.Name)}
}

// Restart implements MQTTBroker.
func (m *Mosquitto) Restart(t testing.TB) { m.Instance.Restart(t) }

// Dial connects an MQTT client with test-friendly timeouts (fast
// reconnects) and closes it when the test ends.
func Dial(t testing.TB, b MQTTBroker, id topics.Identity, clientID string, mod func(*mqtt.Config)) *mqtt.Client {
	t.Helper()
	cfg := b.ClientConfig(id)
	cfg.ClientID = clientID
	cfg.ConnectTimeout = 5 * time.Second
	cfg.MaxReconnectInterval = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	c, err := mqtt.Dial(context.Background(), cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatalf("dial %s as %s: %v", cfg.BrokerURL, clientID, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// MQTTHarness is the conformance harness of MQTT clients on broker b.
func MQTTHarness(b MQTTBroker, fleet string, maxPayload int) Harness {
	var held func(string) int
	if e, ok := b.(*Embedded); ok {
		held = func(id string) int { return e.Broker().Queued(id) }
	}
	return Harness{
		Held:  held,
		Fleet: fleet,
		Connect: func(t *testing.T, spec ClientSpec) transport.Transport {
			cfg := b.ClientConfig(spec.Identity)
			cfg.ClientID = spec.ClientID
			cfg.Will, cfg.QueueSize, cfg.CleanSession = spec.Will, spec.QueueSize, spec.CleanSession
			cfg.MaxPayload = maxPayload
			cfg.ConnectTimeout = 5 * time.Second
			cfg.MaxReconnectInterval = 200 * time.Millisecond
			c, err := mqtt.Dial(context.Background(), cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
			if err != nil {
				t.Fatalf("dial %s as %s: %v", cfg.BrokerURL, spec.ClientID, err)
			}
			return c
		},
		Kill:          func(t *testing.T, tr transport.Transport) { tr.(*mqtt.Client).Kill() },
		RestartBroker: b.Restart,
		MaxPayload:    maxPayload,
	}
}
