package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// addDevice gives a device account to a running env and returns its password.
func (e *env) addDevice(t *testing.T, id string) string {
	t.Helper()
	secret, password, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cfg.Credentials.Add(id, secret, topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: acltest.Fleet}); err != nil {
		t.Fatal(err)
	}
	e.passwords[id] = password
	return password
}

// TestReservedDeviceIDRefused registers (behind the registry's back) a
// device named like the coordinator's client id: its CONNECT is refused as
// not authorized and the coordinator's session stays.
func TestReservedDeviceIDRefused(t *testing.T) {
	e := startEnv(t, false, nil)
	coordID := topics.CoordinatorClientID(acltest.Fleet)
	lost := make(chan error, 1)
	coord := connect(t, e.tcp("coordinator").SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }), coordID)
	_, in := subscribeInbox(t, coord, topics.AllDevicesOut(acltest.Fleet))
	e.addDevice(t, coordID)
	for _, v := range []struct {
		version byte
		want    byte
	}{{4, acltest.Connack3NotAuthorized}, {5, acltest.Connack5NotAuthorized}} {
		code, err := acltest.RawConnect{Version: v.version, ClientID: coordID, Username: coordID, Password: e.passwords[coordID], PasswordFlag: true}.Do(e.b.TCPAddr(), nil)
		if err != nil || code != v.want {
			t.Fatalf("MQTT %d CONNECT as device %q: code 0x%02x, %v; want 0x%02x", v.version, coordID, code, err, v.want)
		}
	}
	if _, err := acltest.TryConnect(e.tcp(coordID).SetClientID(coordID)); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("paho CONNECT as device %q: %v, want not authorized", coordID, err)
	}
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	publishOK(t, dev, topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), []byte("still here"))
	awaitPayload(t, in, "still here")
	select {
	case err := <-lost:
		t.Fatalf("coordinator lost its connection: %v", err)
	default:
	}
}

// TestClientIDTakeOverRefused: a device connecting with another device's
// client id is refused with "identifier rejected" (not bad credentials),
// and the other device's connection is untouched.
func TestClientIDTakeOverRefused(t *testing.T) {
	e := startEnv(t, false, nil)
	lost := make(chan error, 1)
	connect(t, e.tcp("dev-b").SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }), "dev-b")
	code, err := acltest.RawConnect{Version: 4, ClientID: "dev-b", Username: "dev-a", Password: e.passwords["dev-a"], PasswordFlag: true}.Do(e.b.TCPAddr(), nil)
	if err != nil || code != acltest.Connack3IdentifierRejected {
		t.Fatalf("dev-a as client id dev-b: code 0x%02x, %v; want 0x%02x", code, err, acltest.Connack3IdentifierRejected)
	}
	if _, err := acltest.TryConnect(e.tcp("dev-a").SetClientID("dev-b")); err == nil || !strings.Contains(err.Error(), "identifier rejected") {
		t.Fatalf("paho: %v, want identifier rejected", err)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-lost:
		t.Fatalf("dev-b lost its connection: %v", err)
	default:
	}
	if q := e.b.Stats().Connected; q != 1 {
		t.Fatalf("%d clients connected, want dev-b only", q)
	}
}

// TestConnackCodes checks the CONNACK code of each refusal, MQTT 3.1.1 and 5.
func TestConnackCodes(t *testing.T) {
	e := startEnv(t, false, nil)
	_, wrong, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		c      acltest.RawConnect
		v3, v5 byte
	}{
		{"right password", acltest.RawConnect{ClientID: "dev-a", Username: "dev-a", Password: e.passwords["dev-a"], PasswordFlag: true}, 0, 0},
		{"empty password", acltest.RawConnect{ClientID: "dev-a", Username: "dev-a", PasswordFlag: true}, acltest.Connack3BadCredentials, acltest.Connack5BadCredentials},
		{"no password", acltest.RawConnect{ClientID: "dev-a", Username: "dev-a"}, acltest.Connack3BadCredentials, acltest.Connack5BadCredentials},
		{"wrong password", acltest.RawConnect{ClientID: "dev-a", Username: "dev-a", Password: wrong, PasswordFlag: true}, acltest.Connack3BadCredentials, acltest.Connack5BadCredentials},
		{"unknown user", acltest.RawConnect{ClientID: "nobody", Username: "nobody", Password: wrong, PasswordFlag: true}, acltest.Connack3BadCredentials, acltest.Connack5BadCredentials},
		{"wrong client id", acltest.RawConnect{ClientID: "dev-a-2", Username: "dev-a", Password: e.passwords["dev-a"], PasswordFlag: true}, acltest.Connack3IdentifierRejected, acltest.Connack5ClientIDNotValid},
		{"other fleet", acltest.RawConnect{ClientID: "dev-x", Username: "dev-x", Password: e.passwords["dev-x"], PasswordFlag: true}, acltest.Connack3NotAuthorized, acltest.Connack5NotAuthorized},
	}
	for _, tc := range cases {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/v%d", tc.name, v), func(t *testing.T) {
				c := tc.c
				c.Version = v
				want := tc.v3
				if v == 5 {
					want = tc.v5
				}
				code, err := c.Do(e.b.TCPAddr(), nil)
				if err != nil || code != want {
					t.Fatalf("code 0x%02x, %v; want 0x%02x", code, err, want)
				}
			})
		}
	}
}

// TestSysPublishAcknowledged: a QoS 1 publish to $SYS is acknowledged and
// dropped (mochi would leave it unanswered and the client waiting), QoS 0
// is dropped, QoS 2 ends the connection; none reaches a subscriber.
func TestSysPublishAcknowledged(t *testing.T) {
	e := startEnv(t, false, nil)
	for user, clientID := range map[string]string{"dev-a": "dev-a", "coordinator": "coord-sys"} {
		c := connect(t, e.tcp(user), clientID)
		before := e.b.Stats().PublishDenied
		for _, qos := range []byte{0, 1} {
			tok := c.Publish("$SYS/broker/uptime", qos, false, []byte("forged"))
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("%s: QoS %d publish to $SYS not acknowledged within 5s: %v", user, qos, tok.Error())
			}
		}
		waitFor(t, "both $SYS publishes counted", func() bool { return e.b.Stats().PublishDenied == before+2 })
		if !c.IsConnected() {
			t.Fatalf("%s disconnected after a $SYS publish", user)
		}
		c.Disconnect(0)
		lost := make(chan struct{})
		c = connect(t, e.tcp(user).SetConnectionLostHandler(func(paho.Client, error) { close(lost) }), clientID)
		c.Publish("$SYS/broker/uptime", 2, false, []byte("forged"))
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: QoS 2 publish to $SYS neither answered nor disconnected", user)
		}
	}
}

// TestDeviceRetainPolicy: a device's retained publish outside its blob
// descriptors is dropped and counted; its descriptors are retained, within
// the size and count limits; clearing always works.
func TestDeviceRetainPolicy(t *testing.T) {
	e := startEnv(t, false, func(c *Config) { c.MaxDeviceRetained = 2; c.MaxDeviceRetainedPayload = 1024 })
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	f := acltest.Fleet
	desc := func(i int) string {
		return topics.DeviceOut(f, "dev-a", topics.KindBlob) + "/" + strings.Repeat(fmt.Sprintf("%02x", i), 32) + "/desc"
	}
	retain := func(topic, payload string) {
		t.Helper()
		tok := dev.Publish(topic, 1, true, []byte(payload))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("retained publish to %s: %v", topic, tok.Error())
		}
	}
	retain(topics.DeviceOut(f, "dev-a", "junk")+"/1", "junk")
	retain(topics.DeviceOut(f, "dev-a", topics.KindStatus), "status")
	retain(topics.DeviceOut(f, "dev-a", topics.KindUpdate), "update")
	retain(topics.DeviceOut(f, "dev-a", topics.KindBlob)+"/junk/desc", "not a hash")
	retain(desc(1), strings.Repeat("x", 1025)) // over the size limit
	retain(desc(1), "d1")
	retain(desc(2), "d2")
	retain(desc(3), "d3")       // over the count limit
	retain(desc(2), "d2 again") // replaces one of its own: allowed
	if s := e.b.Stats(); s.RetainDenied != 6 {
		t.Fatalf("RetainDenied = %d, want 6", s.RetainDenied)
	}
	retained := func() []string {
		t.Helper()
		c := connect(t, e.tcp("coordinator"), fmt.Sprintf("late-%d", time.Now().UnixNano()))
		_, in := subscribeInbox(t, c, topics.FleetRoot(f)+"/dev/dev-a/out/#")
		publishOK(t, c, topics.DeviceOut(f, "dev-a", "marker"), []byte("marker"))
		got := awaitPayload(t, in, "marker")
		c.Disconnect(0)
		return got
	}
	if got := retained(); len(got) != 2 || !contains(got, "d1") || !contains(got, "d2 again") {
		t.Fatalf("retained after the device's publishes: %q, want d1 and \"d2 again\"", got)
	}
	retain(desc(1), "") // the device withdraws a descriptor
	retain(desc(3), "d3")
	if got := retained(); len(got) != 2 || !contains(got, "d3") || !contains(got, "d2 again") {
		t.Fatalf("retained after withdraw: %q", got)
	}
	// The coordinator retains anything in its fleet.
	coord := connect(t, e.tcp("coordinator"), "coord")
	if tok := coord.Publish(topics.Manifest(f), 1, true, []byte("manifest")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if s := e.b.Stats(); s.RetainDenied != 6 {
		t.Fatalf("RetainDenied = %d after allowed retains, want 6", s.RetainDenied)
	}
}

// TestDevicePublishRateLimit: over DevicePublishRate a device's publishes
// are dropped and counted; coordinators are not limited; reconnecting does
// not refill the bucket.
func TestDevicePublishRateLimit(t *testing.T) {
	const burst = 10
	e := startEnv(t, false, func(c *Config) { c.DevicePublishRate = 1; c.DevicePublishBurst = burst })
	obs := connect(t, e.tcp("coordinator"), "obs")
	_, in := subscribeInbox(t, obs, topics.AllDevicesOut(acltest.Fleet))
	topic := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus)
	start := time.Now()
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	const sent = 40
	for i := range sent / 2 {
		publishOK(t, dev, topic, []byte(fmt.Sprint("m", i)))
	}
	dev.Disconnect(0)
	dev = connect(t, e.tcp("dev-a"), "dev-a")
	for i := sent / 2; i < sent; i++ {
		publishOK(t, dev, topic, []byte(fmt.Sprint("m", i)))
	}
	elapsed := time.Since(start)
	for i := range 30 { // the coordinator is not limited
		publishOK(t, obs, topic, []byte(fmt.Sprint("c", i)))
	}
	got := awaitPayload(t, in, "c29")
	fromDevice := 0
	for _, p := range got {
		if strings.HasPrefix(p, "m") {
			fromDevice++
		}
	}
	if len(got)-fromDevice != 29 {
		t.Fatalf("coordinator messages delivered: %d, want 29", len(got)-fromDevice)
	}
	maxOK := burst + int(elapsed.Seconds()) + 1
	if fromDevice < burst || fromDevice > maxOK {
		t.Fatalf("device messages delivered: %d in %v, want %d..%d", fromDevice, elapsed, burst, maxOK)
	}
	if s := e.b.Stats(); s.RateLimited != uint64(sent-fromDevice) {
		t.Fatalf("RateLimited = %d, want %d", s.RateLimited, sent-fromDevice)
	}
	if !dev.IsConnected() {
		t.Fatal("rate-limited device was disconnected")
	}
}

func TestLimitConfigErrors(t *testing.T) {
	creds := NewCredentials()
	for _, cfg := range []Config{
		{Fleet: "f", TCPAddr: ":0", Credentials: creds, DevicePublishBurst: -1},
		{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxDeviceRetained: -1},
		{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxDeviceRetainedPayload: -1},
		{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxPayload: 1000, MaxDeviceRetainedPayload: 1001},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	b, err := New(Config{Fleet: "f", TCPAddr: ":0", Credentials: creds, MaxPayload: 1000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.cfg.DevicePublishRate != DefaultDevicePublishRate || b.cfg.DevicePublishBurst != DefaultDevicePublishBurst ||
		b.cfg.MaxDeviceRetained != DefaultMaxDeviceRetained || b.cfg.MaxDeviceRetainedPayload != 1000 {
		t.Fatalf("defaults: %+v", b.cfg)
	}
}

func TestBucket(t *testing.T) {
	var b bucket
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if !b.take(t0, 2, 3) {
			t.Fatalf("take %d of a full bucket of 3 refused", i)
		}
	}
	if b.take(t0, 2, 3) {
		t.Fatal("fourth take at once allowed")
	}
	if !b.take(t0.Add(500*time.Millisecond), 2, 3) || b.take(t0.Add(500*time.Millisecond), 2, 3) {
		t.Fatal("half a second at 2/s must refill exactly one token")
	}
	if n := func() int {
		n := 0
		for b.take(t0.Add(time.Hour), 2, 3) {
			n++
		}
		return n
	}(); n != 3 {
		t.Fatalf("after an hour %d tokens, want the burst of 3", n)
	}
}

func TestCollector(t *testing.T) {
	e := startEnv(t, false, func(c *Config) { c.DevicePublishRate = 1; c.DevicePublishBurst = 1 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.b.Collector())
	dev := connect(t, e.tcp("dev-a"), "dev-a")
	for range 3 {
		publishOK(t, dev, topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), []byte("s"))
	}
	waitFor(t, "rate limit counted", func() bool { return e.b.Stats().RateLimited >= 1 })
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			got[f.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["fedge_broker_rate_limited_total"] != float64(e.b.Stats().RateLimited) || got["fedge_broker_clients_connected"] != 1 {
		t.Fatalf("metrics %v, stats %+v", got, e.b.Stats())
	}
}
