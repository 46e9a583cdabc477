// Package transporttest is the conformance suite every transport.Transport
// implementation must pass: publish/subscribe, wildcard routing, retained
// delivery to a late subscriber, QoS 1 redelivery to a persistent session,
// last will on an abrupt disconnect, ACL denial, the payload limit, and a
// full queue that sheds (counted) and keeps hearing.
//
// An implementation's test builds a Harness (how to connect a client with
// an identity, how to kill its connection, optionally how to restart the
// broker) and calls Run.
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
)

// Devices are the device ids the suite connects as; a harness whose broker
// needs credentials provisions these plus the fleet's coordinator.
var Devices = []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e"}

// ClientSpec describes one client the suite wants.
type ClientSpec struct {
	Identity topics.Identity
	// ClientID is the device id for devices (brokers may insist) and
	// unique per test for coordinators.
	ClientID string
	// CleanSession asks for a session that ends with the connection; the
	// suite uses it to erase what earlier tests left in a device's session.
	CleanSession bool
	Will         *transport.Will
	// QueueSize is the per-subscription queue bound (0: the default).
	QueueSize int
}

// Harness adapts one transport implementation to the suite.
type Harness struct {
	// Fleet is the fleet all identities belong to.
	Fleet string
	// Connect returns a connected client; the suite closes it.
	Connect func(t *testing.T, spec ClientSpec) transport.Transport
	// Kill drops tr's connection abruptly (no DISCONNECT), so the broker
	// publishes its will. tr is unusable afterwards.
	Kill func(t *testing.T, tr transport.Transport)
	// RestartBroker, when set, restarts the broker, losing its state; the
	// clients must reconnect and resubscribe by themselves.
	RestartBroker func(t testing.TB)
	// PublishDenialVisible: a publish the ACL denies returns
	// ErrNotAuthorized. Over MQTT 3.1.1 the broker drops it silently.
	PublishDenialVisible bool
	// SubscribeDenialSilent: the broker may accept a subscription its ACL
	// denies and then deliver nothing on it (Mosquitto with MQTT 3.1.1)
	// instead of refusing it in the SUBACK.
	SubscribeDenialSilent bool
	// MaxPayload is the client-side payload limit; 0 skips that check.
	MaxPayload int
	// Wait bounds how long the suite waits for an expected message.
	Wait time.Duration
	// Quiet is how long the suite watches to conclude that a message
	// will not arrive.
	Quiet time.Duration
	// Held, when set, reports how many QoS 1 messages the broker holds for
	// a client id's session (sent and unacknowledged, or waiting while it
	// is away), so a test can wait until a message is in an offline session
	// before the client comes back (the embedded broker loses a message
	// published while it is still taking a closing session over).
	Held func(clientID string) int
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	if h.Wait == 0 {
		h.Wait = 10 * time.Second
	}
	if h.Quiet == 0 {
		h.Quiet = 300 * time.Millisecond
	}
	s := &suite{h: h}
	t.Run("PublishSubscribe", s.publishSubscribe)
	t.Run("Wildcards", s.wildcards)
	t.Run("RetainedToLateSubscriber", s.retained)
	t.Run("PersistentSessionRedelivery", s.persistentSession)
	t.Run("FullQueueShedsAndKeepsHearing", s.fullQueue)
	t.Run("LastWill", s.lastWill)
	t.Run("ACLDenial", s.aclDenial)
	if h.MaxPayload > 0 {
		t.Run("PayloadLimit", s.payloadLimit)
	}
	if h.RestartBroker != nil {
		t.Run("ResubscribeAfterBrokerRestart", s.brokerRestart)
	}
}

type suite struct{ h Harness }

func (s *suite) device(id string) topics.Identity {
	return topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: s.h.Fleet}
}

func (s *suite) coordinator() topics.Identity {
	return topics.Identity{Role: topics.RoleCoordinator, Fleet: s.h.Fleet}
}

// spec returns the ClientSpec of an identity: devices use their id as
// client id, coordinators a name unique to the test.
func spec(t *testing.T, id topics.Identity, name string) ClientSpec {
	if id.Role == topics.RoleDevice {
		return ClientSpec{Identity: id, ClientID: id.ID}
	}
	return ClientSpec{Identity: id, ClientID: clientID(name)}
}

// connect connects a client and closes it at cleanup.
func (s *suite) connect(t *testing.T, id topics.Identity, name string) transport.Transport {
	t.Helper()
	tr := s.h.Connect(t, spec(t, id, name))
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// wipe erases the broker sessions of devices, left by earlier tests.
func (s *suite) wipe(t *testing.T, devices ...string) {
	t.Helper()
	for _, d := range devices {
		sp := spec(t, s.device(d), d)
		sp.CleanSession = true
		if err := s.h.Connect(t, sp).Close(); err != nil {
			t.Fatalf("wipe session of %s: %v", d, err)
		}
	}
}

// clientID is a unique client id for a coordinator connection.
func clientID(name string) string {
	return fmt.Sprintf("%s-%x", name, clientSeq.Add(1)^uint64(time.Now().UnixNano()))
}

var clientSeq atomic.Uint64

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) subscribe(t *testing.T, tr transport.Transport, filter string) transport.Subscription {
	t.Helper()
	sub, err := tr.Subscribe(ctxT(t, s.h.Wait), filter)
	if err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sub
}

func (s *suite) publish(t *testing.T, tr transport.Transport, topic string, payload []byte, retain bool) {
	t.Helper()
	if err := tr.Publish(ctxT(t, s.h.Wait), topic, payload, transport.PublishOptions{Retain: retain}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// recv returns the next message on sub or fails the test.
func (s *suite) recv(t *testing.T, sub transport.Subscription, what string) transport.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C():
		if !ok {
			t.Fatalf("%s: subscription closed", what)
		}
		return m
	case <-time.After(s.h.Wait):
		t.Fatalf("%s: nothing received within %v", what, s.h.Wait)
	}
	return transport.Message{}
}

// recvPayload waits for a message with the given payload, skipping others
// (QoS 1 may redeliver earlier messages).
func (s *suite) recvPayload(t *testing.T, sub transport.Subscription, payload []byte) transport.Message {
	t.Helper()
	deadline := time.After(s.h.Wait)
	for {
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatalf("waiting for %q: subscription closed", payload)
			}
			if bytes.Equal(m.Payload, payload) {
				return m
			}
		case <-deadline:
			t.Fatalf("waiting for %q: not received within %v", payload, s.h.Wait)
		}
	}
}

// expectNone fails if sub receives anything during Quiet.
func (s *suite) expectNone(t *testing.T, sub transport.Subscription, what string) {
	t.Helper()
	select {
	case m, ok := <-sub.C():
		if ok {
			t.Fatalf("%s: unexpected message on %s: %q", what, m.Topic, m.Payload)
		}
	case <-time.After(s.h.Quiet):
	}
}

func (s *suite) publishSubscribe(t *testing.T) {
	fleet := s.h.Fleet
	s.wipe(t, Devices[0])
	coord := s.connect(t, s.coordinator(), "coord")
	dev := s.connect(t, s.device(Devices[0]), "dev")
	up := s.subscribe(t, coord, topics.AllDevicesOut(fleet))
	down := s.subscribe(t, dev, topics.DeviceInAll(fleet, Devices[0]))

	topic := topics.DeviceOut(fleet, Devices[0], topics.KindUpdate)
	s.publish(t, dev, topic, []byte("update-1"), false)
	m := s.recv(t, up, "device to coordinator")
	if m.Topic != topic || string(m.Payload) != "update-1" || m.Retained {
		t.Fatalf("got %+v, want topic %s payload update-1 not retained", m, topic)
	}

	topic = topics.DeviceIn(fleet, Devices[0], topics.KindTask)
	big := bytes.Repeat([]byte{0, 1, 2, 255}, 64<<10) // binary, 256 KiB
	s.publish(t, coord, topic, big, false)
	m = s.recv(t, down, "coordinator to device")
	if m.Topic != topic || !bytes.Equal(m.Payload, big) {
		t.Fatalf("got topic %s, %d bytes; want %s, %d bytes", m.Topic, len(m.Payload), topic, len(big))
	}

	// Order is kept within one publisher and one subscription.
	for i := range 20 {
		s.publish(t, coord, topic, fmt.Appendf(nil, "seq-%02d", i), false)
	}
	for i := range 20 {
		want := fmt.Sprintf("seq-%02d", i)
		if m := s.recv(t, down, want); string(m.Payload) != want {
			t.Fatalf("message %d: got %q, want %q", i, m.Payload, want)
		}
	}
	if err := down.Unsubscribe(ctxT(t, s.h.Wait)); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	s.publish(t, coord, topic, []byte("after-unsubscribe"), false)
	for m := range down.C() { // closed by Unsubscribe
		t.Fatalf("message %q after unsubscribe", m.Payload)
	}
}

func (s *suite) wildcards(t *testing.T) {
	fleet := s.h.Fleet
	s.wipe(t, Devices[1], Devices[2])
	coord := s.connect(t, s.coordinator(), "coord")
	b := s.connect(t, s.device(Devices[1]), "dev-b")
	c := s.connect(t, s.device(Devices[2]), "dev-c")
	status := s.subscribe(t, coord, topics.FleetRoot(fleet)+"/dev/+/out/"+topics.KindStatus)
	all := s.subscribe(t, coord, topics.FleetRoot(fleet)+"/dev/"+Devices[2]+"/#")

	s.publish(t, b, topics.DeviceOut(fleet, Devices[1], topics.KindUpdate), []byte("b-update"), false)
	s.publish(t, b, topics.DeviceOut(fleet, Devices[1], topics.KindStatus), []byte("b-status"), false)
	s.publish(t, c, topics.DeviceOut(fleet, Devices[2], topics.KindBlob)+"/x/chunk", []byte("c-blob"), false)
	s.publish(t, c, topics.DeviceOut(fleet, Devices[2], topics.KindStatus), []byte("c-status"), false)

	// Order between different publishers is not defined.
	var got []string
	for range 2 {
		got = append(got, string(s.recv(t, status, "status").Payload))
	}
	slices.Sort(got)
	if want := []string{"b-status", "c-status"}; !slices.Equal(got, want) {
		t.Fatalf("'+' filter got %q, want %q", got, want)
	}
	s.expectNone(t, status, "'+' filter")
	got = got[:0]
	for range 2 {
		got = append(got, string(s.recv(t, all, "dev-c #").Payload))
	}
	if want := []string{"c-blob", "c-status"}; !slices.Equal(got, want) {
		t.Fatalf("'#' filter got %q, want %q", got, want)
	}
	s.expectNone(t, all, "'#' filter")
}

func (s *suite) retained(t *testing.T) {
	fleet := s.h.Fleet
	coord := s.connect(t, s.coordinator(), "coord")
	topic := topics.GlobalBlob(fleet, "retained-"+clientID("r")) + "/desc"
	own := s.subscribe(t, coord, topic)
	s.publish(t, coord, topic, []byte("old"), true)
	s.publish(t, coord, topic, []byte("current"), true)
	// A broker may acknowledge before it routes; once the publisher's own
	// subscription has the message, the broker is done with it.
	s.recvPayload(t, own, []byte("current"))
	t.Cleanup(func() {
		_ = coord.Publish(context.Background(), topic, nil, transport.PublishOptions{Retain: true})
	})

	s.wipe(t, Devices[3], Devices[4])
	late := s.connect(t, s.device(Devices[3]), "late")
	sub := s.subscribe(t, late, topics.GlobalAll(fleet))
	m := s.recvPayload(t, sub, []byte("current"))
	if m.Topic != topic || !m.Retained {
		t.Fatalf("got %+v, want retained message on %s", m, topic)
	}
	// A live subscriber gets later publishes as ordinary messages.
	s.publish(t, coord, topic, []byte("newer"), true)
	if m := s.recvPayload(t, sub, []byte("newer")); m.Retained {
		t.Fatalf("live delivery marked retained: %+v", m)
	}

	// An empty retained publish clears the topic.
	s.publish(t, coord, topic, nil, true)
	s.recvPayload(t, sub, []byte{}) // the clearing message itself reaches live subscribers
	later := s.connect(t, s.device(Devices[4]), "later")
	sub2 := s.subscribe(t, later, topic)
	s.expectNone(t, sub2, "cleared retained topic")
}

func (s *suite) persistentSession(t *testing.T) {
	fleet := s.h.Fleet
	dev := Devices[0]
	s.wipe(t, dev)
	coord := s.connect(t, s.coordinator(), "coord")
	first := s.h.Connect(t, spec(t, s.device(dev), dev))
	filter := topics.DeviceInAll(fleet, dev)
	s.subscribe(t, first, filter)
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	topic := topics.DeviceIn(fleet, dev, topics.KindTask)
	s.publish(t, coord, topic, []byte("while-away"), false)
	if s.h.Held != nil {
		deadline := time.Now().Add(s.h.Wait)
		for s.h.Held(dev) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("the broker holds nothing for %s's session %v after the publish", dev, s.h.Wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	second := s.h.Connect(t, spec(t, s.device(dev), dev))
	t.Cleanup(func() { _ = second.Close() })
	sub := s.subscribe(t, second, filter)
	m := s.recvPayload(t, sub, []byte("while-away"))
	if m.Topic != topic {
		t.Fatalf("got topic %s, want %s", m.Topic, topic)
	}
}

// fullQueue: a burst bigger than the queue (and than an MQTT broker's
// in-flight window) is shed and counted, and the client keeps receiving on
// the same connection afterwards.
func (s *suite) fullQueue(t *testing.T) {
	fleet := s.h.Fleet
	dev := Devices[1]
	s.wipe(t, dev)
	coord := s.connect(t, s.coordinator(), "coord")
	sp := spec(t, s.device(dev), dev)
	sp.QueueSize = 1
	c := s.h.Connect(t, sp)
	t.Cleanup(func() { _ = c.Close() })
	sub := s.subscribe(t, c, topics.DeviceInAll(fleet, dev))

	topic := topics.DeviceIn(fleet, dev, topics.KindTask)
	const burst = 200
	for i := range burst {
		s.publish(t, coord, topic, []byte(fmt.Sprint("m", i)), false)
	}
	deadline := time.Now().Add(s.h.Wait)
	for sub.Dropped() < burst-1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := sub.Dropped(); d != burst-1 {
		t.Fatalf("Dropped() = %d, want %d with a queue of 1 and %d messages", d, burst-1, burst)
	}
	if m := s.recv(t, sub, "queued message"); string(m.Payload) != "m0" {
		t.Fatalf("queued message %q, want m0", m.Payload)
	}
	s.publish(t, coord, topic, []byte("after"), false)
	if m := s.recv(t, sub, "message after the burst"); string(m.Payload) != "after" {
		t.Fatalf("after the burst got %q", m.Payload)
	}
}

func (s *suite) lastWill(t *testing.T) {
	fleet := s.h.Fleet
	coord := s.connect(t, s.coordinator(), "coord")
	status := s.subscribe(t, coord, topics.FleetRoot(fleet)+"/dev/+/out/"+topics.KindStatus)

	willOf := func(dev string) *transport.Will {
		return &transport.Will{Topic: topics.DeviceOut(fleet, dev, topics.KindStatus), Payload: []byte(dev + " offline")}
	}
	s.wipe(t, Devices[2], Devices[3])
	sp := spec(t, s.device(Devices[2]), "clean")
	sp.Will = willOf(Devices[2])
	clean := s.h.Connect(t, sp)
	if err := clean.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.expectNone(t, status, "will after a clean Close")

	sp = spec(t, s.device(Devices[3]), "killed")
	sp.Will = willOf(Devices[3])
	killed := s.h.Connect(t, sp)
	s.publish(t, killed, topics.DeviceOut(fleet, Devices[3], topics.KindStatus), []byte("online"), false)
	if m := s.recv(t, status, "online status"); string(m.Payload) != "online" {
		t.Fatalf("got %q, want online", m.Payload)
	}
	s.h.Kill(t, killed)
	m := s.recv(t, status, "last will")
	if m.Topic != willOf(Devices[3]).Topic || string(m.Payload) != Devices[3]+" offline" {
		t.Fatalf("got %s %q, want the will of %s", m.Topic, m.Payload, Devices[3])
	}
}

func (s *suite) aclDenial(t *testing.T) {
	fleet := s.h.Fleet
	a, b := Devices[0], Devices[1]
	s.wipe(t, a, b)
	coord := s.connect(t, s.coordinator(), "coord")
	up := s.subscribe(t, coord, topics.AllDevicesOut(fleet))
	global := s.subscribe(t, coord, topics.GlobalAll(fleet))
	devA := s.connect(t, s.device(a), "dev-a")
	devB := s.connect(t, s.device(b), "dev-b")

	denied := []string{
		topics.DeviceOut(fleet, b, topics.KindUpdate), // under another device's id
		topics.Manifest(fleet),                        // global models are the coordinator's
		topics.DeviceIn(fleet, a, topics.KindTask),    // its own inbox is written by the coordinator
	}
	for _, topic := range denied {
		err := devA.Publish(ctxT(t, s.h.Wait), topic, []byte("forged"), transport.PublishOptions{})
		if s.h.PublishDenialVisible && !errors.Is(err, transport.ErrNotAuthorized) {
			t.Errorf("publish by %s to %s: err = %v, want ErrNotAuthorized", a, topic, err)
		}
		if !s.h.PublishDenialVisible && err != nil && !errors.Is(err, transport.ErrNotAuthorized) {
			t.Errorf("publish by %s to %s: unexpected error %v", a, topic, err)
		}
	}
	// A permitted publish after the denied ones must still arrive, and be
	// the first thing the coordinator sees.
	s.publish(t, devA, topics.DeviceOut(fleet, a, topics.KindUpdate), []byte("genuine"), false)
	if m := s.recv(t, up, "genuine update"); string(m.Payload) != "genuine" {
		t.Fatalf("coordinator received %q on %s, want only the genuine update", m.Payload, m.Topic)
	}
	s.expectNone(t, global, "forged global publish")

	var silent []transport.Subscription
	for _, filter := range []string{
		topics.FleetRoot(fleet) + "/dev/" + b + "/out/#", // another device's updates
		topics.AllDevicesOut(fleet),                      // everyone's updates
		topics.DeviceInAll(fleet, b),                     // another device's inbox
	} {
		sub, err := devA.Subscribe(ctxT(t, s.h.Wait), filter)
		switch {
		case errors.Is(err, transport.ErrNotAuthorized) && sub == nil:
		case err == nil && s.h.SubscribeDenialSilent:
			silent = append(silent, sub)
		default:
			t.Errorf("subscribe by %s to %s: err = %v, want ErrNotAuthorized", a, filter, err)
		}
	}
	s.publish(t, devB, topics.DeviceOut(fleet, b, topics.KindUpdate), []byte("b-secret"), false)
	s.publish(t, coord, topics.DeviceIn(fleet, b, topics.KindTask), []byte("b-task"), false)
	s.recvPayload(t, up, []byte("b-secret"))
	for _, sub := range silent {
		s.expectNone(t, sub, "subscription the ACL denies")
	}
	// The client still works after denials.
	own := s.subscribe(t, devA, topics.DeviceInAll(fleet, a))
	s.publish(t, coord, topics.DeviceIn(fleet, a, topics.KindTask), []byte("a-task"), false)
	if m := s.recv(t, own, "own inbox"); string(m.Payload) != "a-task" {
		t.Fatalf("own inbox got %q, want a-task", m.Payload)
	}
}

func (s *suite) payloadLimit(t *testing.T) {
	fleet := s.h.Fleet
	s.wipe(t, Devices[4])
	dev := s.connect(t, s.device(Devices[4]), "dev-e")
	topic := topics.DeviceOut(fleet, Devices[4], topics.KindUpdate)
	err := dev.Publish(ctxT(t, s.h.Wait), topic, make([]byte, s.h.MaxPayload+1), transport.PublishOptions{})
	if !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("publish of %d bytes: err = %v, want ErrTooLarge", s.h.MaxPayload+1, err)
	}
	coord := s.connect(t, s.coordinator(), "coord")
	up := s.subscribe(t, coord, topic)
	s.publish(t, dev, topic, make([]byte, s.h.MaxPayload), false)
	if m := s.recv(t, up, "payload at the limit"); len(m.Payload) != s.h.MaxPayload {
		t.Fatalf("got %d bytes, want %d", len(m.Payload), s.h.MaxPayload)
	}
}

func (s *suite) brokerRestart(t *testing.T) {
	fleet := s.h.Fleet
	dev := Devices[2]
	s.wipe(t, dev)
	coord := s.connect(t, s.coordinator(), "coord")
	d := s.connect(t, s.device(dev), "dev")
	up := s.subscribe(t, coord, topics.AllDevicesOut(fleet))
	down := s.subscribe(t, d, topics.DeviceInAll(fleet, dev))
	s.publish(t, d, topics.DeviceOut(fleet, dev, topics.KindStatus), []byte("before"), false)
	s.recvPayload(t, up, []byte("before"))

	s.h.RestartBroker(t)

	// Publishes block until the client is reconnected; the subscriptions
	// come back without the caller doing anything. A publish that races the
	// resubscription may be lost by a broker that lost its state, so retry.
	deadline := time.Now().Add(s.h.Wait)
	// A publish written as the client notices the old connection is gone
	// fails ("use of closed network connection") instead of waiting: that
	// is a lost publish like the others, so it is retried too.
	for i := 0; ; i++ {
		for _, p := range []struct {
			tr    transport.Transport
			topic string
			body  []byte
		}{
			{d, topics.DeviceOut(fleet, dev, topics.KindStatus), fmt.Appendf(nil, "after-%d", i)},
			{coord, topics.DeviceIn(fleet, dev, topics.KindTask), fmt.Appendf(nil, "task-%d", i)},
		} {
			if err := p.tr.Publish(ctxT(t, s.h.Wait), p.topic, p.body, transport.PublishOptions{}); err != nil {
				t.Logf("publish %s after the restart: %v (retrying)", p.topic, err)
			}
		}
		if gotBoth(up, down, 500*time.Millisecond) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivery in either direction within %v after the broker restart", s.h.Wait)
		}
	}
}

// gotBoth reports whether both subscriptions delivered a message within d.
func gotBoth(a, b transport.Subscription, d time.Duration) bool {
	timeout := time.After(d)
	var okA, okB bool
	for !okA || !okB {
		select {
		case m := <-a.C():
			okA = okA || bytes.HasPrefix(m.Payload, []byte("after-"))
		case m := <-b.C():
			okB = okB || bytes.HasPrefix(m.Payload, []byte("task-"))
		case <-timeout:
			return false
		}
	}
	return true
}
