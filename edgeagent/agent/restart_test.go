package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// updatesFor returns the envelopes received for round.
func (c *fakeCoordinator) updatesFor(round uint64) []*wire.Envelope {
	var out []*wire.Envelope
	for _, e := range c.resultsSnapshot() {
		if u, ok := e.Msg.(*fedgepb.Update); ok && u.RoundId == round {
			out = append(out, e)
		}
	}
	return out
}

func TestPendingUpdateResentUntilAckedAcrossRestart(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	c.autoAck = false
	host := newHost(t)
	src := synthetic(t, 40, 5)
	dev := newDevice(t, c, host, "dev-r", src, nil)
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	c.announce(m1)
	dev.start(t, bus)
	eventually(t, "model installed", func() bool { return dev.activeVersion() == 1 })
	c.sendTask(dev.id, trainTask(7, m1, 3))
	eventually(t, "update resent while unacknowledged", func() bool { return len(c.updatesFor(7)) >= 3 })
	first := c.updatesFor(7)[0]
	for _, e := range c.updatesFor(7) {
		if !e.Equal(first) {
			t.Fatal("a resend differs from the first publish")
		}
	}
	// Restart: a new agent over the same stores and a new connection.
	dev.stop(t)
	seen := len(c.updatesFor(7))
	dev2 := &device{id: dev.id, key: dev.key, state: dev.state, models: dev.models}
	a, err := New(Options{Fleet: fleet, DeviceID: dev.id, Key: dev.key, CoordinatorKey: c.pub, State: dev.state,
		Models: dev.models, Host: host, Data: src, TickInterval: 10 * time.Millisecond,
		Machine: MachineConfig{ResendInterval: time.Hour}})
	must(t, err)
	dev2.agent = a
	c.mu.Lock()
	c.autoAck = true
	c.mu.Unlock()
	dev2.start(t, bus)
	eventually(t, "acked after restart", func() bool { return a.Stats().Acked == 1 })
	after := c.updatesFor(7)
	if len(after) <= seen || !after[len(after)-1].Equal(first) {
		t.Fatal("restart did not re-send the persisted update unchanged")
	}
	if st := a.Stats(); st.TasksRun != 0 {
		t.Fatalf("restarted agent retrained: %+v", st)
	}
	if ps, _ := dev.state.Pending(); len(ps) != 0 {
		t.Fatalf("%d pending after ack", len(ps))
	}
}

func TestWillAnnouncesOffline(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-k", synthetic(t, 10, 6), nil)
	dev.start(t, bus)
	eventually(t, "hello", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) == 1 })
	c.mu.Lock()
	h := c.hellos[0]
	c.mu.Unlock()
	if h.DeviceId != dev.id || h.Capabilities.SampleCount != 10 || h.Capabilities.Arch == "" || len(h.Capabilities.AbiVersions) == 0 ||
		!slices.Contains(h.Capabilities.Features, fedgepb.FeatureSecAgg) {
		t.Fatalf("hello %+v", h)
	}
	dev.tr.(*memory.Client).Kill()
	eventually(t, "offline status", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.statuses {
			if s.DeviceId == dev.id && s.State == fedgepb.DeviceState_DEVICE_STATE_OFFLINE {
				return true
			}
		}
		return false
	})
	dev.cancel()
	<-dev.done // Run ends with the closed transport; its error is expected
	dev.cancel = nil
}

func TestEnrollment(t *testing.T) {
	t.Run("accepted once, persisted", func(t *testing.T) {
		bus := memory.NewBus(memory.Config{}, nil)
		c := newFakeCoordinator(t, bus)
		c.enrollReply = &fedgepb.EnrollResponse{Accepted: true}
		host := newHost(t)
		dev := newDevice(t, c, host, "dev-n", synthetic(t, 10, 7), func(o *Options) { o.EnrollmentToken = "secret" })
		dev.start(t, bus)
		eventually(t, "enrolled", func() bool { ok, _ := dev.state.Enrolled(); return ok })
		c.mu.Lock()
		req := c.enrolls[0]
		c.mu.Unlock()
		if req.EnrollmentToken != "secret" || !bytes.Equal(req.PublicKey, dev.key.Public().(ed25519.PublicKey)) {
			t.Fatalf("enroll request %+v", req)
		}
		eventually(t, "hello after enrollment", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) == 2 })
		dev.stop(t)
		dev.start(t, bus)
		eventually(t, "hello after restart", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) == 3 })
		c.mu.Lock()
		n := len(c.enrolls)
		c.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d enrollment requests, want 1", n)
		}
	})
	t.Run("pending approval is retried with backoff", func(t *testing.T) {
		bus := memory.NewBus(memory.Config{}, nil)
		c := newFakeCoordinator(t, bus)
		c.enrollReply = &fedgepb.EnrollResponse{PendingApproval: true}
		host := newHost(t)
		dev := newDevice(t, c, host, "dev-p", synthetic(t, 10, 7), func(o *Options) { o.EnrollmentToken = "t" })
		dev.start(t, bus)
		eventually(t, "second request", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.enrolls) >= 2 })
		if ok, _ := dev.state.Enrolled(); ok {
			t.Fatal("enrolled while pending")
		}
	})
	t.Run("refused stops the agent", func(t *testing.T) {
		bus := memory.NewBus(memory.Config{}, nil)
		c := newFakeCoordinator(t, bus)
		c.enrollReply = &fedgepb.EnrollResponse{Reason: "bad token"}
		host := newHost(t)
		dev := newDevice(t, c, host, "dev-x", synthetic(t, 10, 7), func(o *Options) { o.EnrollmentToken = "t" })
		tr, err := bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleDevice, ID: dev.id, Fleet: fleet}})
		must(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dev.agent.Run(ctx, tr); !errors.Is(err, ErrEnrollRefused) {
			t.Fatalf("Run: %v, want ErrEnrollRefused", err)
		}
	})
}

func TestReconnectedSaysHelloAndResends(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	c.autoAck = false
	host := newHost(t)
	dev := newDevice(t, c, host, "dev-rc", synthetic(t, 20, 8), func(o *Options) { o.Machine.ResendInterval = time.Hour })
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	c.announce(m1)
	dev.start(t, bus)
	eventually(t, "model installed", func() bool { return dev.activeVersion() == 1 })
	c.sendTask(dev.id, trainTask(4, m1, 1))
	eventually(t, "update published", func() bool { return len(c.updatesFor(4)) == 1 })
	hellos := func() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) }
	if hellos() != 1 {
		t.Fatalf("%d hellos", hellos())
	}
	dev.agent.Reconnected()
	eventually(t, "hello and resend after reconnect", func() bool { return hellos() == 2 && len(c.updatesFor(4)) == 2 })
	if !c.updatesFor(4)[1].Equal(c.updatesFor(4)[0]) {
		t.Fatal("resend differs")
	}
}
