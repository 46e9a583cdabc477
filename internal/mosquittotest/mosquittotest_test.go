package mosquittotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
)

func password(t testing.TB) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tableUsers gives every acltest user a random password.
func tableUsers(t testing.TB) []User {
	var us []User
	for _, u := range acltest.Users() {
		us = append(us, User{Name: u.Name, Password: password(t), Identity: u.Identity})
	}
	return us
}

func dialAs(t testing.TB, inst *Instance, user, pw string, clean bool, will *transport.Will) (*pahoConn, error) {
	t.Helper()
	return dialPaho(dialOpts{url: inst.URL(), user: user, password: pw, tls: inst.TLSConfig(user), clean: clean, will: will})
}

func mustDial(t testing.TB, inst *Instance, user string) *pahoConn {
	t.Helper()
	u, ok := inst.User(user)
	if !ok {
		t.Fatalf("no user %q", user)
	}
	c, err := dialAs(t, inst, user, u.Password, true, nil)
	if err != nil {
		t.Fatalf("%v\nmosquitto log:\n%s", err, inst.Log())
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConnectCredentials(t *testing.T) {
	for _, mode := range []struct {
		name       string
		tls, mtls  bool
		wantScheme string
	}{
		{"tcp", false, false, "tcp://"},
		{"tls", true, false, "ssl://"},
		{"mtls", true, true, "ssl://"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			us := tableUsers(t)
			inst := Start(t, Options{Users: us, TLS: mode.tls, RequireClientCert: mode.mtls})
			if !strings.HasPrefix(inst.URL(), mode.wantScheme) {
				t.Fatalf("URL %q, want scheme %s", inst.URL(), mode.wantScheme)
			}
			good := us[2] // dev-a
			cases := []struct {
				name, user, pw string
				ok             bool
			}{
				{"good password", good.Name, good.Password, true},
				{"wrong password", good.Name, good.Password + "x", false},
				{"other user's password", good.Name, us[3].Password, false},
				{"unknown user", "nobody", good.Password, false},
				{"no credentials", "", "", false},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					conn, err := dialPaho(dialOpts{url: inst.URL(), user: c.user, clientID: "client-" + strings.ReplaceAll(c.name, " ", "-"),
						password: c.pw, tls: inst.TLSConfig(c.user), clean: true})
					if c.ok != (err == nil) {
						t.Fatalf("connect error = %v, want success %v\nlog:\n%s", err, c.ok, inst.Log())
					}
					if conn != nil {
						_ = conn.Close()
					}
				})
			}
			if mode.mtls {
				// A correct password without a client certificate is refused
				// in the TLS handshake.
				noCert := inst.PKI()
				cfg, err := noCert.ClientConfig("")
				if err != nil {
					t.Fatal(err)
				}
				if c, err := dialPaho(dialOpts{url: inst.URL(), user: good.Name, password: good.Password, tls: cfg, clean: true}); err == nil {
					_ = c.Close()
					t.Fatal("mTLS broker accepted a client without certificate")
				}
			}
			if mode.tls {
				// Plain TCP to the TLS listener must not work.
				plain := *inst
				plain.opts.TLS = false
				if c, err := dialPaho(dialOpts{url: plain.URL(), user: good.Name, password: good.Password, clean: true}); err == nil {
					_ = c.Close()
					t.Fatal("TLS listener accepted plain MQTT")
				}
			}
		})
	}
}

// TestCertIdentity: with CertIdentity the certificate alone identifies the
// client, whatever user name and password it sends, and the ACL follows the
// certificate's CN.
func TestCertIdentity(t *testing.T) {
	us := tableUsers(t)
	inst := Start(t, Options{Users: us, CertIdentity: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs := mustDial(t, inst, "observer")
	sub, err := obs.Subscribe(ctx, topics.FleetRoot(acltest.Fleet)+"/dev/+/out/#")
	if err != nil {
		t.Fatal(err)
	}
	// dev-a's certificate, but claiming to be the coordinator without a password.
	c, err := dialPaho(dialOpts{url: inst.URL(), user: "coordinator", clientID: "dev-a", tls: inst.TLSConfig("dev-a"), clean: true})
	if err != nil {
		t.Fatalf("certificate-only connect: %v\nlog:\n%s", err, inst.Log())
	}
	defer c.Close()
	other := topics.DeviceOut(acltest.Fleet, "dev-b", topics.KindUpdate)
	own := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate)
	for _, topic := range []string{other, own} {
		if err := c.Publish(ctx, topic, []byte(topic), transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-sub.C():
		if m.Topic != own {
			t.Fatalf("first delivery on %q; the client acted as someone other than its certificate's CN", m.Topic)
		}
	case <-ctx.Done():
		t.Fatalf("own publish not delivered\nlog:\n%s", inst.Log())
	}
}

// TestACLTable runs the shared allow/deny table (publish, subscribe and
// last-will cases) against Mosquitto with the generated ACL file, over TLS.
func TestACLTable(t *testing.T) {
	us := tableUsers(t)
	inst := Start(t, Options{Users: us, TLS: true})
	acltest.RunMQTT(t, func(user string) *paho.ClientOptions {
		u, _ := inst.User(user)
		return paho.NewClientOptions().AddBroker(inst.URL()).SetUsername(user).
			SetPassword(u.Password).SetTLSConfig(inst.TLSConfig(user))
	})
	if t.Failed() {
		t.Logf("mosquitto log:\n%s", inst.Log())
	}
}

// TestACLEdgeTopics checks the places where a naive ACL file and the policy
// disagree (bare trailing slashes, empty levels) on the real broker.
func TestACLEdgeTopics(t *testing.T) {
	us := tableUsers(t)
	inst := Start(t, Options{Users: us})
	obs := mustDial(t, inst, "observer")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := obs.Subscribe(ctx, topics.FleetRoot(acltest.Fleet)+"/#")
	if err != nil {
		t.Fatal(err)
	}
	dev := mustDial(t, inst, "dev-a")
	own := topics.FleetRoot(acltest.Fleet) + "/dev/dev-a/out"
	cases := []string{own + "/", own + "//x", own + "/update//", own}
	for _, topic := range cases {
		if err := dev.Publish(ctx, topic, []byte(topic), transport.PublishOptions{}); err != nil {
			t.Fatalf("publish %q: %v", topic, err)
		}
	}
	sentinel := own + "/sentinel"
	if err := dev.Publish(ctx, sentinel, []byte(sentinel), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for !got[sentinel] {
		select {
		case m := <-sub.C():
			got[m.Topic] = true
		case <-ctx.Done():
			t.Fatalf("sentinel not received; got %v", got)
		}
	}
	id := acltest.Identity("dev-a")
	for _, topic := range cases {
		if want := topics.Allowed(id, topics.Publish, topic); got[topic] != want {
			t.Errorf("publish %q delivered = %v, policy allows = %v", topic, got[topic], want)
		}
	}

	// Reads: the device subscribes to the whole fleet (Mosquitto grants
	// it and filters each delivery); the coordinator sends edge topics.
	devSub, err := dev.Subscribe(ctx, topics.FleetRoot(acltest.Fleet)+"/#")
	if err != nil {
		t.Fatal(err)
	}
	root := topics.FleetRoot(acltest.Fleet)
	reads := []string{root + "/dev/dev-a/in/", root + "/dev/dev-a/in", root + "/dev/dev-a/in//x",
		root + "/global/", root + "/global", root + "/global//", root + "/dev/dev-ab/in/task", root + "/dev/dev-a/out/update"}
	coord := mustDial(t, inst, "coordinator")
	for _, topic := range reads {
		if err := coord.Publish(ctx, topic, []byte(topic), transport.PublishOptions{}); err != nil {
			t.Fatalf("publish %q: %v", topic, err)
		}
	}
	readSentinel := root + "/dev/dev-a/in/sentinel"
	if err := coord.Publish(ctx, readSentinel, []byte(readSentinel), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	got = map[string]bool{}
	for !got[readSentinel] {
		select {
		case m := <-devSub.C():
			got[m.Topic] = true
		case <-ctx.Done():
			t.Fatalf("read sentinel not received; got %v", got)
		}
	}
	for _, topic := range reads {
		if want := topics.Allowed(id, topics.Subscribe, topic); got[topic] != want {
			t.Errorf("delivery of %q to dev-a = %v, policy allows reading = %v", topic, got[topic], want)
		}
	}
}

func waitPayload(ch <-chan transport.Message, want []byte, d time.Duration) bool {
	return waitPayloadEither(ch, nil, want, d)
}

// waitPayloadEither is waitPayload over two channels (a nil one is never
// ready), e.g. a subscription and the messages that arrived before it.
func waitPayloadEither(ch, early <-chan transport.Message, want []byte, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		var m transport.Message
		var ok bool
		select {
		case m, ok = <-ch:
		case m, ok = <-early:
		case <-timer.C:
			return false
		}
		if !ok {
			return false
		}
		if bytes.Equal(m.Payload, want) {
			return true
		}
	}
}

// TestRestartKeepsSessionAndPort: a message queued for an offline device
// with a persistent session survives a broker restart on the same port.
func TestRestartKeepsSessionAndPort(t *testing.T) {
	us := tableUsers(t)
	inst := Start(t, Options{Users: us, TLS: true})
	addr := inst.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	devPW := us[2].Password // dev-a
	dev, err := dialAs(t, inst, "dev-a", devPW, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	inbox := topics.DeviceInAll(acltest.Fleet, "dev-a")
	if _, err := dev.Subscribe(ctx, inbox); err != nil {
		t.Fatal(err)
	}
	_ = dev.Close()

	coord := mustDial(t, inst, "coordinator")
	task := topics.DeviceIn(acltest.Fleet, "dev-a", topics.KindTask)
	if err := coord.Publish(ctx, task, []byte("queued"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	retained := topics.Manifest(acltest.Fleet)
	if err := coord.Publish(ctx, retained, []byte("manifest"), transport.PublishOptions{Retain: true}); err != nil {
		t.Fatal(err)
	}
	_ = coord.Close()

	inst.Restart(t)
	if inst.Addr() != addr {
		t.Fatalf("restart moved the broker from %s to %s", addr, inst.Addr())
	}
	// Reconnect with the same session; paho re-registers no handler, so
	// subscribe again (same filter: the broker keeps one subscription).
	dev, err = dialAs(t, inst, "dev-a", devPW, false, nil)
	if err != nil {
		t.Fatalf("reconnect after restart: %v\nlog:\n%s", err, inst.Log())
	}
	defer dev.Close()
	sub, err := dev.Subscribe(ctx, inbox)
	if err != nil {
		t.Fatal(err)
	}
	// The queued message may arrive before this Subscribe (right after
	// CONNACK), then through the client's default handler.
	if !waitPayloadEither(sub.C(), dev.early, []byte("queued"), 5*time.Second) {
		t.Fatalf("queued QoS 1 message lost across restart\nlog:\n%s", inst.Log())
	}
	g, err := dev.Subscribe(ctx, topics.GlobalAll(acltest.Fleet))
	if err != nil {
		t.Fatal(err)
	}
	if !waitPayload(g.C(), []byte("manifest"), 5*time.Second) {
		t.Fatal("retained manifest lost across restart")
	}
}

func TestMaxPayload(t *testing.T) {
	us := tableUsers(t)
	const limit = 64 << 10
	inst := Start(t, Options{Users: us, MaxPayload: limit})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs := mustDial(t, inst, "observer")
	out := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate)
	sub, err := obs.Subscribe(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	dev := mustDial(t, inst, "dev-a")
	big := bytes.Repeat([]byte{'x'}, limit+1)
	exact := bytes.Repeat([]byte{'y'}, limit)
	if err := dev.Publish(ctx, out, big, transport.PublishOptions{}); err != nil {
		t.Logf("oversized publish: %v", err)
	}
	if err := dev.Publish(ctx, out, exact, transport.PublishOptions{}); err != nil {
		t.Fatalf("publish at the limit after an oversized one: %v", err)
	}
	select {
	case m := <-sub.C():
		if !bytes.Equal(m.Payload, exact) {
			t.Fatalf("first delivery has %d bytes, want the %d-byte message (oversized must be dropped)", len(m.Payload), len(exact))
		}
	case <-ctx.Done():
		t.Fatal("message at the limit not delivered")
	}
}

// fakeTB records Skip and Fatal instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skipf(format string, a ...any)  { f.skipped = format }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = format }

func TestRequireWhenMissing(t *testing.T) {
	saved := brokerPaths
	t.Cleanup(func() { brokerPaths = saved })
	brokerPaths = []string{"/nonexistent/mosquitto"}
	t.Setenv("PATH", t.TempDir())

	if err := Available(); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("Available() = %v, want the install hint", err)
	}
	t.Setenv(RequireEnv, "")
	f := &fakeTB{TB: t}
	Require(f)
	if f.skipped == "" || f.failed != "" {
		t.Errorf("without %s: skipped=%q failed=%q, want a skip", RequireEnv, f.skipped, f.failed)
	}
	t.Setenv(RequireEnv, "1")
	f = &fakeTB{TB: t}
	Require(f)
	if f.failed == "" || f.skipped != "" {
		t.Errorf("with %s=1: skipped=%q failed=%q, want a failure", RequireEnv, f.skipped, f.failed)
	}
}

func TestSetupRejectsBadUsers(t *testing.T) {
	Require(t)
	dev := topics.Identity{Role: topics.RoleDevice, ID: "d1", Fleet: "f"}
	cases := []struct {
		name  string
		users []User
	}{
		{"colon in password", []User{{Name: "d1", Password: "a:b", Identity: dev}}},
		{"newline in password", []User{{Name: "d1", Password: "a\nb", Identity: dev}}},
		{"space in user name", []User{{Name: "d 1", Password: "p", Identity: dev}}},
		{"no fleet", []User{{Name: "d1", Password: "p", Identity: topics.Identity{Role: topics.RoleDevice, ID: "d1"}}}},
		{"no role", []User{{Name: "d1", Password: "p", Identity: topics.Identity{ID: "d1", Fleet: "f"}}}},
		{"duplicate", []User{{Name: "d1", Password: "p", Identity: dev}, {Name: "d1", Password: "q", Identity: dev}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := setup(t.TempDir(), Options{Users: c.users}); err == nil {
				t.Fatal("setup accepted bad users")
			}
		})
	}
	users := []User{{Name: "d1", Password: "p", Identity: topics.Identity{Role: topics.RoleDevice, ID: "d1"}}}
	inst, err := setup(t.TempDir(), Options{Fleet: "f", Users: users})
	if err != nil {
		t.Fatalf("Options.Fleet not filled into identities: %v", err)
	}
	if u, _ := inst.User("d1"); u.Identity.Fleet != "f" {
		t.Fatalf("identity fleet %q, want f", u.Identity.Fleet)
	}
	if users[0].Identity.Fleet != "" {
		t.Fatal("setup modified the caller's Users slice")
	}
}
