package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

func TestConfigErrors(t *testing.T) {
	creds := NewCredentials()
	srvTLS := &tls.Config{Certificates: []tls.Certificate{{}}}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad fleet", Config{Fleet: "a/b", TCPAddr: ":0", Credentials: creds}, "fleet"},
		{"no listener", Config{Fleet: "f", Credentials: creds}, "no listener"},
		{"tls without config", Config{Fleet: "f", TLSAddr: ":0", Credentials: creds}, "server certificate"},
		{"tls config without addr", Config{Fleet: "f", TCPAddr: ":0", TLS: srvTLS, Credentials: creds}, "TLSAddr is empty"},
		{"same addr", Config{Fleet: "f", TCPAddr: "127.0.0.1:1", TLSAddr: "127.0.0.1:1", TLS: srvTLS, Credentials: creds}, "both"},
		{"no credentials", Config{Fleet: "f", TCPAddr: ":0"}, "Credentials is nil"},
		{"negative payload", Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxPayload: -1}, "MaxPayload"},
		{"huge payload", Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxPayload: 1 << 30}, "MaxPayload"},
		{"negative timeout", Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, ConnectTimeout: -1}, "ConnectTimeout"},
		{"queue too long", Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxQueued: 70000}, "MaxQueued"},
		{"tiny session expiry", Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, SessionExpiry: time.Millisecond}, "SessionExpiry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
	b, err := New(Config{Fleet: "f", TCPAddr: "127.0.0.1:0", Credentials: creds}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.cfg.MaxPayload != DefaultMaxPayload || b.cfg.ConnectTimeout != DefaultConnectTimeout || b.cfg.SessionExpiry != DefaultSessionExpiry {
		t.Fatalf("defaults not filled: %+v", b.cfg)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := b.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

// TestACLTable runs the shared access table against the embedded broker.
func TestACLTable(t *testing.T) {
	for _, mode := range []string{"tcp", "mtls"} {
		t.Run(mode, func(t *testing.T) {
			e := startEnv(t, mode == "mtls", nil)
			dial := e.tcp
			if mode == "mtls" {
				dial = func(user string) *pahoOptions { return e.tls("", user, "") }
			}
			acltest.RunMQTT(t, dial)
			s := e.b.Stats()
			if s.PublishDenied == 0 || s.SubscribeDenied == 0 || s.WillDenied == 0 || s.ConnectsRefused == 0 {
				t.Fatalf("denials not counted: %+v", s)
			}
		})
	}
}

func TestConnectAuthentication(t *testing.T) {
	e := startEnv(t, false, nil)
	other := e.passwords["coordinator"]
	_, foreignPassword, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Credentials.Remove("dev-b")
	if err := e.cfg.Credentials.AddCert("certonly", topics.Identity{Role: topics.RoleDevice, ID: "certonly", Fleet: acltest.Fleet}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, password, clientID string
		ok                             bool
	}{
		{"device", "dev-a", e.passwords["dev-a"], "dev-a", true},
		{"coordinator with own client id", "coordinator", other, "coordinator-worker-1", true},
		{"wrong password", "dev-a", foreignPassword, "dev-a", false},
		{"another user's password", "dev-a", other, "dev-a", false},
		{"password not base64", "dev-a", "not base64!", "dev-a", false},
		{"empty password", "dev-a", "", "dev-a", false},
		{"unknown user", "nobody", foreignPassword, "nobody", false},
		{"no username", "", e.passwords["dev-a"], "dev-a", false},
		{"removed user", "dev-b", e.passwords["dev-b"], "dev-b", false},
		{"device with another device's client id", "dev-a", e.passwords["dev-a"], "dev-b", false},
		{"other fleet", "dev-x", e.passwords["dev-x"], "dev-x", false},
		{"certificate-only user with password", "certonly", foreignPassword, "certonly", false},
	}
	refused := e.b.Stats().ConnectsRefused
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.tcp(tc.user).SetPassword(tc.password).SetClientID(tc.clientID)
			c, err := acltest.TryConnect(opts)
			if c != nil {
				c.Disconnect(0)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("connect error = %v, want ok = %v", err, tc.ok)
			}
			if !tc.ok {
				refused++
				if got := e.b.Stats().ConnectsRefused; got != refused {
					t.Fatalf("ConnectsRefused = %d, want %d", got, refused)
				}
			}
		})
	}
}

func TestTLSAndMutualTLS(t *testing.T) {
	t.Run("tls with password", func(t *testing.T) {
		e := startEnv(t, false, nil)
		c := connect(t, e.tls("dev-a", "", e.passwords["dev-a"]), "dev-a")
		if !c.IsConnected() {
			t.Fatal("not connected")
		}
		if _, err := acltest.TryConnect(e.tls("dev-a", "", "").SetClientID("dev-a")); err == nil {
			t.Fatal("TLS without password or client certificate accepted")
		}
	})
	t.Run("mtls", func(t *testing.T) {
		e := startEnv(t, true, nil)
		tests := []struct {
			name, user, cert, password, clientID string
			ok                                   bool
		}{
			{"certificate names the device", "", "dev-a", "", "dev-a", true},
			{"username equal to CN", "dev-a", "dev-a", "", "dev-a", true},
			{"certificate plus right password", "dev-a", "dev-a", e.passwords["dev-a"], "dev-a", true},
			{"coordinator certificate", "", "coordinator", "", "coord-client", true},
			{"username differs from CN", "dev-b", "dev-a", e.passwords["dev-b"], "dev-b", false},
			{"certificate plus wrong password", "dev-a", "dev-a", e.passwords["dev-b"], "dev-a", false},
			{"CN without credentials", "", "stranger", "", "stranger", false},
			{"client id differs from CN", "", "dev-a", "", "dev-b", false},
			{"no client certificate", "dev-a", "", e.passwords["dev-a"], "dev-a", false},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c, err := acltest.TryConnect(e.tls(tc.user, tc.cert, tc.password).SetClientID(tc.clientID))
				if c != nil {
					c.Disconnect(0)
				}
				if (err == nil) != tc.ok {
					t.Fatalf("connect error = %v, want ok = %v", err, tc.ok)
				}
			})
		}
	})
}

func TestOversizedPublish(t *testing.T) {
	const limit = 4096
	e := startEnv(t, false, func(c *Config) { c.MaxPayload = limit })
	obs := connect(t, e.tcp("coordinator"), "obs")
	code, in := subscribeInbox(t, obs, topics.AllDevicesOut(acltest.Fleet))
	if code > 1 {
		t.Fatalf("subscribe refused: 0x%02x", code)
	}
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	topic := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate)
	publishOK(t, dev, topic, bytes.Repeat([]byte("a"), limit))
	publishOK(t, dev, topic, bytes.Repeat([]byte("b"), limit+1))
	publishOK(t, dev, topic, []byte("marker"))
	got := awaitPayload(t, in, "marker")
	if len(got) != 1 || len(got[0]) != limit {
		t.Fatalf("delivered before marker: %d messages (want only the %d-byte one)", len(got), limit)
	}
	if s := e.b.Stats(); s.Oversized != 1 || !dev.IsConnected() {
		t.Fatalf("Oversized = %d, connected = %v; want 1, true", s.Oversized, dev.IsConnected())
	}
	// A packet far over the limit is not read at all: the connection closes.
	tok := dev.Publish(topic, 1, false, bytes.Repeat([]byte("c"), limit+packetOverhead+1))
	tok.WaitTimeout(2 * time.Second)
	waitFor(t, "oversized packet to close the connection", func() bool { return e.b.Stats().Oversized == 2 })
}

func TestRestartOnSameAddress(t *testing.T) {
	e := startEnv(t, false, nil)
	tcpAddr, tlsAddr := e.b.TCPAddr(), e.b.TLSAddr()
	connect(t, e.tcp("dev-a"), "dev-a")
	// A connection that never sends CONNECT must not hold Close up.
	rawConn(t, tcpAddr)
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := e.b.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Close took %v", d)
		}
		e.cfg.TCPAddr, e.cfg.TLSAddr = tcpAddr, tlsAddr
		e.start()
		if e.b.TCPAddr() != tcpAddr || e.b.TLSAddr() != tlsAddr {
			t.Fatalf("restarted on %s/%s, want %s/%s", e.b.TCPAddr(), e.b.TLSAddr(), tcpAddr, tlsAddr)
		}
		c := connect(t, e.tcp("dev-a"), "dev-a")
		publishOK(t, c, topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), []byte("up"))
		rawConn(t, tcpAddr)
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStartFailsOnBusyPortAndCanRetry(t *testing.T) {
	e := startEnv(t, false, nil)
	cfg := e.cfg
	cfg.TCPAddr, cfg.TLSAddr, cfg.TLS = "127.0.0.1:0", e.b.TLSAddr(), e.cfg.TLS
	b, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err == nil {
		t.Fatal("Start on a busy TLS port succeeded")
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("retry after the port was freed: %v", err)
	}
	defer b.Close()
	connect(t, paho.NewClientOptions().AddBroker("tcp://"+b.TCPAddr()).SetUsername("dev-a").SetPassword(e.passwords["dev-a"]), "dev-a")
}

func TestConnectTimeoutClosesSilentConnections(t *testing.T) {
	e := startEnv(t, false, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond })
	c := rawConn(t, e.b.TCPAddr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read from silent connection: %v, want EOF", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestPreAuthChecks(t *testing.T) {
	e := startEnv(t, false, nil)
	tests := []struct {
		name string
		data []byte
	}{
		{"CONNECT announcing 1 MiB", []byte{0x10, 0x80, 0x80, 0x40}},
		{"PUBLISH before CONNECT", []byte{0x30, 0x05, 0, 1, 'a', 'b', 'c'}},
		{"HTTP request", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"malformed length", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := rawConn(t, e.b.TCPAddr())
			if _, err := c.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
				t.Fatalf("read: %v, want the broker to close the connection", err)
			}
			waitFor(t, "rejection to be counted", func() bool { return e.b.Stats().PreAuthRejected == uint64(i+1) })
		})
	}
	// A CONNECT just under the limit (a 60 KiB will) is accepted.
	c := connect(t, e.tcp("dev-a").SetWill(topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), strings.Repeat("x", 60<<10), 1, false), "dev-a")
	if !c.IsConnected() {
		t.Fatal("CONNECT with a 60 KiB will refused")
	}
}

func TestRevokedClientLosesAccess(t *testing.T) {
	e := startEnv(t, false, nil)
	obs := connect(t, e.tcp("coordinator"), "obs")
	_, in := subscribeInbox(t, obs, topics.AllDevicesOut(acltest.Fleet))
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	topic := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate)
	publishOK(t, dev, topic, []byte("before"))
	awaitPayload(t, in, "before")
	e.cfg.Credentials.Remove("dev-a")
	publishOK(t, dev, topic, []byte("after"))
	code, _ := subscribeInbox(t, dev, topics.DeviceInAll(acltest.Fleet, "dev-a"))
	if code <= 1 {
		t.Fatal("revoked device could subscribe")
	}
	// The coordinator's marker comes after the device's publish was handled.
	publishOK(t, obs, topics.DeviceOut(acltest.Fleet, "dev-b", topics.KindStatus), []byte("marker"))
	if got := awaitPayload(t, in, "marker"); len(got) != 0 {
		t.Fatalf("revoked device's publish delivered: %q", got)
	}
	if s := e.b.Stats(); s.PublishDenied != 1 {
		t.Fatalf("PublishDenied = %d, want 1", s.PublishDenied)
	}
	if n := e.b.Disconnect("dev-a"); n != 1 {
		t.Fatalf("Disconnect closed %d connections, want 1", n)
	}
	waitFor(t, "revoked device to be disconnected", func() bool { return !dev.IsConnectionOpen() })
	if n := e.b.Disconnect("dev-a"); n != 0 {
		t.Fatalf("second Disconnect closed %d connections", n)
	}
	if !obs.IsConnectionOpen() {
		t.Fatal("Disconnect closed another user's connection")
	}
}
