package mqtt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
)

var (
	coordID = topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}
	devA    = transporttest.Devices[0]
	devAID  = topics.Identity{Role: topics.RoleDevice, ID: devA, Fleet: fleet}
)

func recv(t *testing.T, sub transport.Subscription) transport.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C():
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
	}
	return transport.Message{}
}

// An incoming message over the client's limit is discarded, counted and
// acknowledged (so the broker does not send it again); later messages flow.
func TestOversizedIncomingDiscarded(t *testing.T) {
	ctx := context.Background()
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet})
	coord := transporttest.Dial(t, b, coordID, "coordinator-1", nil)
	dev := transporttest.Dial(t, b, devAID, devA, func(c *mqtt.Config) { c.MaxPayload = 1000 })
	sub, err := dev.Subscribe(ctx, topics.DeviceInAll(fleet, devA))
	if err != nil {
		t.Fatal(err)
	}
	topic := topics.DeviceIn(fleet, devA, topics.KindTask)
	for _, p := range [][]byte{make([]byte, 1001), []byte("fits")} {
		if err := coord.Publish(ctx, topic, p, transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if m := recv(t, sub); !bytes.Equal(m.Payload, []byte("fits")) {
		t.Fatalf("got %d bytes, want the small message", len(m.Payload))
	}
	// The counters move just after the message is queued: let them settle.
	st := dev.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.Received != 1 && time.Now().Before(deadline); st = dev.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.TooLarge != 1 || st.Received != 1 {
		t.Fatalf("stats %+v, want 1 too large and 1 received", st)
	}
}

// After the network drops, the client reconnects by itself and messages
// published meanwhile reach the renewed subscription.
func TestDropConnectionReconnects(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		dropConnection(t, transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet}))
	})
	t.Run("mosquitto", func(t *testing.T) {
		dropConnection(t, transporttest.StartMosquitto(t, transporttest.BrokerOptions{Fleet: fleet}))
	})
}

// dropConnection holds the device's reconnect back until the message
// "during outage" is in the broker's session for it. Without that the
// reconnect (immediate on loopback) can meet the publish in the middle of
// the broker's session take-over, where mochi v2.7.9 loses a QoS 1 message
// after the PUBACK (a broker limitation RATIONALE.md records, not what this
// test is about): measured as 3 lost messages in 400 runs under -race on a
// busy machine.
func dropConnection(t *testing.T, b transporttest.MQTTBroker) {
	ctx := context.Background()
	coord := transporttest.Dial(t, b, coordID, "coordinator-1", nil)
	reconnect := make(chan struct{})
	dev := transporttest.Dial(t, b, devAID, devA, func(c *mqtt.Config) { gateRedials(t, c, reconnect) })
	sub, err := dev.Subscribe(ctx, topics.DeviceInAll(fleet, devA))
	if err != nil {
		t.Fatal(err)
	}
	dev.DropConnection()
	// paho reports the loss on a goroutine of its own, concurrently with
	// its reconnect, so Stats.Lost is counted a little later.
	waitStats(t, dev, "a lost connection", func(st mqtt.Stats) bool { return st.Lost >= 1 })
	topic := topics.DeviceIn(fleet, devA, topics.KindTask)
	if err := coord.Publish(ctx, topic, []byte("during outage"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// A broker acknowledges a publish before it fans it out, and handles one
	// connection's packets in order: once a second publish of the same
	// client is acknowledged, the first one is queued in the device's session.
	fence := topics.DeviceIn(fleet, transporttest.Devices[1], topics.KindTask)
	if err := coord.Publish(ctx, fence, []byte("fence"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	close(reconnect)
	if m := recv(t, sub); string(m.Payload) != "during outage" {
		t.Fatalf("got %q", m.Payload)
	}
	t.Logf("device %+v", dev.Stats())
	// The device can publish again too.
	up, err := coord.Subscribe(ctx, topics.AllDevicesOut(fleet))
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Publish(ctx, topics.DeviceOut(fleet, devA, topics.KindStatus), []byte("back"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, up); string(m.Payload) != "back" {
		t.Fatalf("got %q", m.Payload)
	}
	// paho calls the connect handler on a goroutine of its own too.
	waitStats(t, dev, "a reconnect", func(st mqtt.Stats) bool { return st.Connects >= 2 && st.Lost >= 1 })
}

// gateRedials makes the client of cfg dial its tcp:// broker itself and
// hold every dial after the first until reconnect is closed.
func gateRedials(t *testing.T, cfg *mqtt.Config, reconnect <-chan struct{}) {
	u, err := url.Parse(cfg.BrokerURL)
	if err != nil || u.Scheme != "tcp" || cfg.Dial != nil {
		t.Fatalf("gateRedials needs a plain tcp:// broker, have %q", cfg.BrokerURL)
	}
	var dials atomic.Int32
	cfg.Dial = func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1) > 1 {
			select {
			case <-reconnect:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	}
}

// waitStats waits up to 10 s for the client's stats to satisfy ok.
func waitStats(t *testing.T, c *mqtt.Client, what string, ok func(mqtt.Stats) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(c.Stats()); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %s", c.Stats(), what)
		}
	}
}

func TestDialAndUseErrors(t *testing.T) {
	ctx := context.Background()
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet})
	cfg := b.ClientConfig(devAID)
	cfg.ClientID, cfg.Password, cfg.ConnectTimeout = devA, "wrong", 5*time.Second
	if c, err := mqtt.Dial(ctx, cfg, zaptest.NewLogger(t)); err == nil {
		_ = c.Close()
		t.Fatal("dial with a wrong password succeeded")
	}
	cfg = b.ClientConfig(devAID)
	cfg.ClientID, cfg.BrokerURL = devA, "ftp://127.0.0.1:1"
	if _, err := mqtt.Dial(ctx, cfg, zaptest.NewLogger(t)); err == nil {
		t.Fatal("dial with an unsupported scheme succeeded")
	}

	c := transporttest.Dial(t, b, devAID, devA, nil)
	if _, err := c.Subscribe(ctx, "fedge/#/x"); !errors.Is(err, transport.ErrInvalidTopic) {
		t.Errorf("subscribe to a bad filter: %v", err)
	}
	if err := c.Publish(ctx, "fedge/+", nil, transport.PublishOptions{}); !errors.Is(err, transport.ErrInvalidTopic) {
		t.Errorf("publish to a filter: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, topics.DeviceOut(fleet, devA, topics.KindStatus), nil, transport.PublishOptions{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
	if _, err := c.Subscribe(ctx, topics.DeviceInAll(fleet, devA)); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("subscribe after close: %v", err)
	}
}

// A burst far bigger than the queue and than the broker's in-flight window
// is shed and counted, and the client keeps hearing: before messages were
// acknowledged on a full queue, the broker's window filled with
// unacknowledged messages and nothing was delivered again on that
// connection.
func TestQueueFullKeepsHearing(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		keepsHearing(t, transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet}))
	})
	t.Run("mosquitto", func(t *testing.T) {
		keepsHearing(t, transporttest.StartMosquitto(t, transporttest.BrokerOptions{Fleet: fleet}))
	})
}

func keepsHearing(t *testing.T, b transporttest.MQTTBroker) {
	ctx := context.Background()
	coord := transporttest.Dial(t, b, coordID, "coordinator-1", nil)
	dev := transporttest.Dial(t, b, devAID, devA, func(c *mqtt.Config) { c.QueueSize = 4 })
	sub, err := dev.Subscribe(ctx, topics.DeviceInAll(fleet, devA))
	if err != nil {
		t.Fatal(err)
	}
	topic := topics.DeviceIn(fleet, devA, topics.KindTask)
	const burst = 2000
	for i := range burst {
		if err := coord.Publish(ctx, topic, []byte(fmt.Sprint("m", i)), transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody reads: everything past the queue is shed, acknowledged.
	deadline := time.Now().Add(20 * time.Second)
	for dev.Stats().Received+dev.Stats().Shed < burst && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := dev.Stats()
	if st.Received+st.Shed != burst || st.Shed != sub.Dropped() || st.Received > 4 {
		t.Fatalf("stats %+v, dropped %d: want %d received or shed, at most 4 received", st, sub.Dropped(), burst)
	}
	for range st.Received {
		recv(t, sub)
	}
	if err := coord.Publish(ctx, topic, []byte("after"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sub); string(m.Payload) != "after" {
		t.Fatalf("after the burst got %q, want \"after\"", m.Payload)
	}
}
