package acltest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/topics"
)

// Dialer returns client options that reach the broker under test as user:
// server URL, username, password and TLS config. RunMQTT sets client id,
// clean session, timeouts and handlers itself.
type Dialer func(user string) *paho.ClientOptions

// Timeout bounds every MQTT operation the helpers wait for.
const Timeout = 10 * time.Second

// settle is how long RunMQTT waits for a message that must not arrive when
// no in-order marker can follow it (other-fleet observers, last wills).
const settle = 300 * time.Millisecond

// TryConnect connects with opts (MQTT 3.1.1 only, so a refusal is not retried
// as 3.1; clean session, no reconnects, one ordered
// handler goroutine) and returns the CONNECT error.
func TryConnect(opts *paho.ClientOptions) (paho.Client, error) {
	opts.SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(Timeout).SetWriteTimeout(Timeout).SetOrderMatters(true)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(Timeout) {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect timed out after %v", Timeout)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// inbox collects every message a client receives.
type inbox chan paho.Message

func newInbox(opts *paho.ClientOptions) inbox {
	ch := make(inbox, 1024)
	opts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		select {
		case ch <- m:
		default:
		}
	})
	return ch
}

// until returns the payloads received before want; ok is false if want did
// not arrive within d.
func (in inbox) until(want string, d time.Duration) (before []string, ok bool) {
	deadline := time.After(d)
	for {
		select {
		case m := <-in:
			if string(m.Payload()) == want {
				return before, true
			}
			before = append(before, string(m.Payload()))
		case <-deadline:
			return before, false
		}
	}
}

func subscribe(c paho.Client, filter string) (byte, error) {
	tok := c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(Timeout) {
		return 0, fmt.Errorf("subscribe %q timed out", filter)
	}
	if err := tok.Error(); err != nil {
		return 0, fmt.Errorf("subscribe %q: %w", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter], nil
}

func publish(c paho.Client, topic, payload string) error {
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(Timeout) {
		return fmt.Errorf("publish %q timed out", topic)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

// watcher is a fleet's observer: subscribed to the whole fleet.
type watcher struct {
	c  paho.Client
	in inbox
}

var runSeq atomic.Int64

// RunMQTT checks a live MQTT broker against Cases and WillCases with paho
// clients. dial must know the credentials of every user in Users. A user
// the broker refuses to connect (the embedded broker serves one fleet and
// refuses the other fleet's accounts) satisfies every denied case of that
// user; an allowed case needs a connection.
//
// A publish case is observed by its fleet's observer: the acting client
// then publishes a marker to a topic it may use, and the case's message must
// have arrived before the marker exactly when allowed (brokers keep one
// client's order). When the marker and the case are seen by different
// observers, the check waits a short settle time instead. A subscribe case
// passes when allowed if the SUBACK grants it and the probe arrives, and
// when denied if the SUBACK refuses it or the probe never arrives. A will
// case disconnects abruptly; the will must reach the observer exactly when
// allowed (a refused CONNECT also denies it).
func RunMQTT(t *testing.T, dial Dialer) {
	run := runSeq.Add(1)
	watchers := map[string]*watcher{}
	for _, fleet := range []string{Fleet, OtherFleet} {
		opts := dial(Observer(fleet)).SetClientID(fmt.Sprintf("%s-acl-%d", Observer(fleet), run))
		in := newInbox(opts)
		c, err := TryConnect(opts)
		if err != nil {
			if fleet == Fleet {
				t.Fatalf("connect observer of %s: %v", fleet, err)
			}
			t.Logf("observer of %s cannot connect (%v): that fleet is not served here", fleet, err)
			continue
		}
		defer c.Disconnect(0)
		if code, err := subscribe(c, topics.FleetRoot(fleet)+"/#"); err != nil || code > 1 {
			t.Fatalf("observer of %s: subscribe: code 0x%02x, %v", fleet, code, err)
		}
		watchers[fleet] = &watcher{c: c, in: in}
	}
	seq := 0
	next := func(kind string) string {
		seq++
		return fmt.Sprintf("%s-%d-%d", kind, run, seq)
	}
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			opts := dial(c.User).SetClientID(c.User)
			in := newInbox(opts)
			cl, err := TryConnect(opts)
			if err != nil {
				if c.Allowed {
					t.Fatalf("connect %s: %v", c.User, err)
				}
				t.Logf("denied: %s cannot connect (%v)", c.User, err)
				return
			}
			defer cl.Disconnect(0)
			if c.Action == topics.Publish {
				checkPublish(t, c, cl, watchers, next)
			} else {
				checkSubscribe(t, c, cl, in, watchers, next)
			}
		})
	}
	for _, w := range WillCases() {
		t.Run(w.Name, func(t *testing.T) { checkWill(t, w, dial, watchers[Fleet], next) })
	}
}

func checkPublish(t *testing.T, c Case, cl paho.Client, watchers map[string]*watcher, next func(string) string) {
	home := Identity(c.User).Fleet
	msg, marker := next("acl"), next("marker")
	if err := publish(cl, c.Topic, msg); err != nil {
		// Refusing the publish outright is a valid denial.
		if c.Allowed {
			t.Fatal(err)
		}
		return
	}
	if err := publish(cl, markerTopic(c.User), marker); err != nil {
		t.Fatal(err)
	}
	hw, ok := watchers[home]
	if !ok {
		t.Fatalf("no observer for %s's own fleet", c.User)
	}
	before, ok := hw.in.until(marker, Timeout)
	if !ok {
		t.Fatalf("marker of %s not observed", c.User)
	}
	delivered := contains(before, msg)
	for fleet, w := range watchers {
		if fleet == home {
			continue
		}
		if _, got := w.in.until(msg, settle); got {
			delivered = true
		}
	}
	if delivered != c.Allowed {
		t.Errorf("%s publish %q: delivered = %v, want %v", c.User, c.Topic, delivered, c.Allowed)
	}
}

func checkSubscribe(t *testing.T, c Case, cl paho.Client, in inbox, watchers map[string]*watcher, next func(string) string) {
	markerFilter := markerTopic(c.User)
	if Identity(c.User).Role == topics.RoleDevice {
		markerFilter = topics.DeviceIn(Identity(c.User).Fleet, c.User, "marker")
	}
	if code, err := subscribe(cl, markerFilter); err != nil || code > 1 {
		t.Fatalf("subscribe marker %q: code 0x%02x, %v", markerFilter, code, err)
	}
	code, err := subscribe(cl, c.Topic)
	if err != nil {
		t.Fatal(err)
	}
	granted := code <= 1
	if c.Allowed && !granted {
		t.Fatalf("%s subscribe %q: SUBACK 0x%02x, want granted", c.User, c.Topic, code)
	}
	pw, ok := watchers[c.ProbeFleet]
	if !ok {
		if c.Allowed {
			t.Fatalf("no observer of %s to publish the probe", c.ProbeFleet)
		}
		t.Logf("denied: SUBACK 0x%02x; probe fleet %s not served here", code, c.ProbeFleet)
		return
	}
	probe, marker := next("probe"), next("marker")
	if err := publish(pw.c, c.Probe, probe); err != nil {
		t.Fatal(err)
	}
	if c.Allowed {
		if _, ok := in.until(probe, Timeout); !ok {
			t.Fatalf("%s subscribed %q but probe on %q never arrived", c.User, c.Topic, c.Probe)
		}
		return
	}
	var delivered bool
	if hw, ok := watchers[Identity(c.User).Fleet]; ok && hw == pw {
		// Probe and marker come from one publisher, so they arrive in order.
		if err := publish(pw.c, markerFilter, marker); err != nil {
			t.Fatal(err)
		}
		before, ok := in.until(marker, Timeout)
		if !ok {
			t.Fatalf("marker to %s not delivered", c.User)
		}
		delivered = contains(before, probe)
	} else {
		_, delivered = in.until(probe, settle)
	}
	if delivered {
		t.Errorf("%s subscribe %q (SUBACK 0x%02x): probe %q was delivered", c.User, c.Topic, code, c.Probe)
	}
}

func checkWill(t *testing.T, w WillCase, dial Dialer, obs *watcher, next func(string) string) {
	payload := next("will")
	opts := dial(w.User).SetClientID(w.User).SetWill(w.Topic, payload, 1, false)
	var mu sync.Mutex
	var raw net.Conn
	opts.SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		d := &net.Dialer{Timeout: Timeout}
		var c net.Conn
		var err error
		switch u.Scheme {
		case "ssl", "tls", "mqtts", "tcps":
			c, err = tls.DialWithDialer(d, "tcp", u.Host, o.TLSConfig)
		default:
			c, err = d.Dial("tcp", u.Host)
		}
		mu.Lock()
		raw = c
		mu.Unlock()
		return c, err
	})
	cl, err := TryConnect(opts)
	if err != nil {
		if w.Allowed {
			t.Fatalf("CONNECT with will on %q refused: %v", w.Topic, err)
		}
		return
	}
	defer cl.Disconnect(0)
	mu.Lock()
	_ = raw.Close() // abrupt: no DISCONNECT packet
	mu.Unlock()
	wait := settle
	if w.Allowed {
		wait = Timeout
	}
	_, got := obs.in.until(payload, wait)
	if got != w.Allowed {
		t.Errorf("will on %q: delivered = %v, want %v", w.Topic, got, w.Allowed)
	}
}

// markerTopic is a topic user may publish to that its fleet's observer sees.
func markerTopic(user string) string {
	id := Identity(user)
	if id.Role == topics.RoleDevice {
		return topics.DeviceOut(id.Fleet, user, "marker")
	}
	return topics.DeviceIn(id.Fleet, "acl-marker", "marker")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
