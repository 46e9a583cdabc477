package broker

import (
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/tlsutil"
)

// env is a running broker with credentials for every acltest user and a
// PKI with a client certificate per user.
type env struct {
	t         testing.TB
	b         *Broker
	cfg       Config
	passwords map[string]string
	pki       *tlsutil.Files
}

// startEnv starts a broker for acltest.Fleet with TCP and TLS listeners on
// free loopback ports; mTLS makes the TLS listener require client
// certificates. edit may change the config before New.
func startEnv(t testing.TB, mTLS bool, edit func(*Config)) *env {
	t.Helper()
	e := &env{t: t, passwords: map[string]string{}}
	creds := NewCredentials()
	var names []string
	for _, u := range acltest.Users() {
		secret, password, err := GenerateSecret()
		if err != nil {
			t.Fatal(err)
		}
		if err := creds.Add(u.Name, secret, u.Identity); err != nil {
			t.Fatalf("add %s: %v", u.Name, err)
		}
		e.passwords[u.Name] = password
		names = append(names, u.Name)
	}
	pki, err := tlsutil.WritePKI(t.TempDir(), nil, append(names, "stranger")...)
	if err != nil {
		t.Fatal(err)
	}
	e.pki = pki
	srvTLS, err := pki.ServerConfig(mTLS)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		Fleet:       acltest.Fleet,
		TCPAddr:     "127.0.0.1:0",
		TLSAddr:     "127.0.0.1:0",
		TLS:         srvTLS,
		Credentials: creds,
	}
	if edit != nil {
		edit(&e.cfg)
	}
	e.start()
	t.Cleanup(func() { _ = e.b.Close() })
	return e
}

func (e *env) start() {
	e.t.Helper()
	log := zap.NewNop() // fuzz workers run outside any test's lifetime
	if _, ok := e.t.(*testing.T); ok {
		log = zaptest.NewLogger(e.t)
	}
	b, err := New(e.cfg, log)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.b = b
}

// tcp returns client options for user over plain TCP with its password.
func (e *env) tcp(user string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker("tcp://" + e.b.TCPAddr()).
		SetUsername(user).SetPassword(e.passwords[user])
}

// tls returns client options for user over TLS; cert selects the client
// certificate of that common name ("" = none); password is sent if non-empty.
func (e *env) tls(user, cert, password string) *paho.ClientOptions {
	cfg, err := e.pki.ClientConfig(cert)
	if err != nil {
		e.t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("ssl://" + e.b.TLSAddr()).SetTLSConfig(cfg).SetUsername(user)
	if password != "" {
		o.SetPassword(password)
	}
	return o
}

// connect connects opts with the given client id and fails the test on error.
func connect(t *testing.T, opts *paho.ClientOptions, clientID string) paho.Client {
	t.Helper()
	c, err := acltest.TryConnect(opts.SetClientID(clientID))
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// waitFor polls cond until it holds or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawConn opens a TCP connection that never speaks MQTT.
func rawConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
