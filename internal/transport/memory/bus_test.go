package memory_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/memory"
)

func dev(id string) topics.Identity {
	return topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: "f"}
}

var coord = topics.Identity{Role: topics.RoleCoordinator, Fleet: "f"}

// The bus holds 100,000 connected devices, each subscribed to its inbox and
// the fleet's global topics, routes one message to every inbox and one
// broadcast to all, with bounded memory per client.
func TestHundredThousandClients(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	ctx := context.Background()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	bus := memory.NewBus(memory.Config{}, nil)
	clients := make([]*memory.Client, n)
	inbox := make([]transport.Subscription, n)
	global := make([]transport.Subscription, n)
	for i := range n {
		id := fmt.Sprintf("d%06d", i)
		c, err := bus.Connect(memory.ClientOptions{Identity: dev(id), ClientID: id, QueueSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
		if inbox[i], err = c.Subscribe(ctx, topics.DeviceInAll("f", id)); err != nil {
			t.Fatal(err)
		}
		if global[i], err = c.Subscribe(ctx, topics.GlobalAll("f")); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perClient := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	t.Logf("%d clients with 2 subscriptions each: %.0f bytes of heap per client, %d goroutines", n, perClient, runtime.NumGoroutine())
	if perClient > 8<<10 {
		t.Errorf("%.0f bytes per client, want under 8 KiB", perClient)
	}

	c, err := bus.Connect(memory.ClientOptions{Identity: coord, ClientID: "coordinator"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		topic := topics.DeviceIn("f", fmt.Sprintf("d%06d", i), topics.KindTask)
		if err := c.Publish(ctx, topic, []byte{byte(i)}, transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publish(ctx, topics.Round("f"), []byte("round 1"), transport.PublishOptions{Retain: true}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := <-inbox[i].C()
		if m.Payload[0] != byte(i) || m.Topic != topics.DeviceIn("f", fmt.Sprintf("d%06d", i), topics.KindTask) {
			t.Fatalf("client %d got %s %v", i, m.Topic, m.Payload)
		}
		if m := <-global[i].C(); string(m.Payload) != "round 1" {
			t.Fatalf("client %d got broadcast %q", i, m.Payload)
		}
	}
	if st := bus.Stats(); st.Delivered != uint64(2*n) || st.Shed != 0 {
		t.Fatalf("stats %+v, want %d delivered", st, 2*n)
	}
	for _, c := range clients {
		_ = c.Close()
	}
}

func TestSessionRules(t *testing.T) {
	ctx := context.Background()
	bus := memory.NewBus(memory.Config{MaxQueued: 3, MaxPayload: 100}, zaptest.NewLogger(t))
	c, _ := bus.Connect(memory.ClientOptions{Identity: coord, ClientID: "coordinator"})
	publish := func(topic, p string) {
		t.Helper()
		if err := c.Publish(ctx, topic, []byte(p), transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	inbox := topics.DeviceIn("f", "d1", topics.KindTask)

	t.Run("offline queue is bounded", func(t *testing.T) {
		d, _ := bus.Connect(memory.ClientOptions{Identity: dev("d1"), ClientID: "d1"})
		if _, err := d.Subscribe(ctx, inbox); err != nil {
			t.Fatal(err)
		}
		_ = d.Close()
		for i := range 5 {
			publish(inbox, fmt.Sprint(i))
		}
		if st := bus.Stats(); st.SessionDropped != 2 {
			t.Fatalf("SessionDropped = %d, want 2", st.SessionDropped)
		}
		d, _ = bus.Connect(memory.ClientOptions{Identity: dev("d1"), ClientID: "d1"})
		sub, _ := d.Subscribe(ctx, inbox)
		for i := range 3 {
			if m := <-sub.C(); string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("got %q, want %d", m.Payload, i)
			}
		}
		_ = d.Close()
	})

	t.Run("a full queue sheds and keeps hearing", func(t *testing.T) {
		d, _ := bus.Connect(memory.ClientOptions{Identity: dev("d7"), ClientID: "d7", QueueSize: 1})
		sub, _ := d.Subscribe(ctx, topics.DeviceInAll("f", "d7"))
		shed := bus.Stats().Shed
		for _, p := range []string{"a", "b", "c"} {
			publish(topics.DeviceIn("f", "d7", topics.KindTask), p)
		}
		if sub.Dropped() != 2 || bus.Stats().Shed-shed != 2 {
			t.Fatalf("Dropped() = %d, bus shed %d, want 2", sub.Dropped(), bus.Stats().Shed-shed)
		}
		if m := <-sub.C(); string(m.Payload) != "a" {
			t.Fatalf("got %q, want a", m.Payload)
		}
		publish(topics.DeviceIn("f", "d7", topics.KindTask), "d")
		if m := <-sub.C(); string(m.Payload) != "d" {
			t.Fatalf("got %q, want d", m.Payload)
		}
		_ = d.Close()
	})

	t.Run("clean session forgets", func(t *testing.T) {
		d, _ := bus.Connect(memory.ClientOptions{Identity: dev("d2"), ClientID: "d2", CleanSession: true})
		if _, err := d.Subscribe(ctx, topics.DeviceInAll("f", "d2")); err != nil {
			t.Fatal(err)
		}
		_ = d.Close()
		before := bus.Sessions()
		publish(topics.DeviceIn("f", "d2", topics.KindTask), "lost")
		d, _ = bus.Connect(memory.ClientOptions{Identity: dev("d2"), ClientID: "d2"})
		sub, _ := d.Subscribe(ctx, topics.DeviceInAll("f", "d2"))
		select {
		case m := <-sub.C():
			t.Fatalf("clean session delivered %q", m.Payload)
		default:
		}
		if bus.Sessions() != before+1 {
			t.Fatalf("sessions %d, want %d", bus.Sessions(), before+1)
		}
		_ = d.Close()
	})

	t.Run("take over", func(t *testing.T) {
		first, _ := bus.Connect(memory.ClientOptions{Identity: dev("d3"), ClientID: "d3"})
		sub, _ := first.Subscribe(ctx, topics.DeviceInAll("f", "d3"))
		second, _ := bus.Connect(memory.ClientOptions{Identity: dev("d3"), ClientID: "d3"})
		if _, ok := <-sub.C(); ok {
			t.Fatal("old client's subscription still open")
		}
		if err := first.Publish(ctx, topics.DeviceOut("f", "d3", topics.KindStatus), nil, transport.PublishOptions{}); !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("publish on taken-over client: %v", err)
		}
		_ = second.Close()
	})

	t.Run("will must pass the ACL", func(t *testing.T) {
		_, err := bus.Connect(memory.ClientOptions{Identity: dev("d4"), ClientID: "d4",
			Will: &transport.Will{Topic: topics.DeviceOut("f", "d5", topics.KindStatus)}})
		if !errors.Is(err, transport.ErrNotAuthorized) {
			t.Fatalf("will under another device's id: %v", err)
		}
	})

	t.Run("invalid topics and limits", func(t *testing.T) {
		for _, topic := range []string{"", "fedge/v1/f/dev/+/in/task", "fedge/v1/f/#"} {
			if err := c.Publish(ctx, topic, nil, transport.PublishOptions{}); !errors.Is(err, transport.ErrInvalidTopic) {
				t.Errorf("publish to %q: %v", topic, err)
			}
		}
		if _, err := c.Subscribe(ctx, "fedge/v1/f/#/x"); !errors.Is(err, transport.ErrInvalidTopic) {
			t.Errorf("subscribe to a bad filter: %v", err)
		}
		if err := c.Publish(ctx, inbox, make([]byte, 101), transport.PublishOptions{}); !errors.Is(err, transport.ErrTooLarge) {
			t.Errorf("oversized publish: %v", err)
		}
		if err := c.Publish(ctx, topics.FleetRoot("other")+"/global/round", nil, transport.PublishOptions{}); !errors.Is(err, transport.ErrNotAuthorized) {
			t.Errorf("publish to another fleet: %v", err)
		}
	})

	t.Run("closed client", func(t *testing.T) {
		d, _ := bus.Connect(memory.ClientOptions{Identity: dev("d6"), ClientID: "d6"})
		_ = d.Close()
		if _, err := d.Subscribe(ctx, topics.DeviceInAll("f", "d6")); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("subscribe after close: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
	})
}
