package agent

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// TestOverMQTT runs the agent and the fake coordinator as MQTT clients of
// the embedded broker (plain TCP) and of Mosquitto with TLS and the fleet
// ACL (skipped when mosquitto is not installed, unless
// FEDGE_REQUIRE_EXTERNAL is set): model install, a training round with the
// delta sent as a blob, ack.
func TestOverMQTT(t *testing.T) {
	brokers := map[string]func(t *testing.T, opts transporttest.BrokerOptions) transporttest.MQTTBroker{
		"embedded": func(t *testing.T, o transporttest.BrokerOptions) transporttest.MQTTBroker {
			return transporttest.StartEmbedded(t, o)
		},
		"mosquitto tls": func(t *testing.T, o transporttest.BrokerOptions) transporttest.MQTTBroker {
			o.TLS = true
			return transporttest.StartMosquitto(t, o)
		},
	}
	for name, start := range brokers {
		t.Run(name, func(t *testing.T) {
			const id = "dev-mqtt"
			b := start(t, transporttest.BrokerOptions{Fleet: fleet, Devices: []string{id}})
			ctr := transporttest.Dial(t, b, topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}, "coordinator-"+fleet, nil)
			_, ckey, _ := ed25519.GenerateKey(nil)
			c := newFakeCoordinatorOn(t, ctr, ckey)
			host := newHost(t)
			dev := newDevice(t, c, host, id, synthetic(t, 64, 11), func(o *Options) { o.InlineLimit = 4096 })
			wasm, weights := logregModel(t, host)
			m1 := c.model(1, wasm, weights)
			c.announce(m1)
			will, err := dev.agent.Will()
			must(t, err)
			cfg := b.ClientConfig(topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet})
			cfg.ClientID, cfg.Will, cfg.ConnectTimeout = id, will, 5*time.Second
			tr, err := mqtt.Dial(context.Background(), cfg, nil)
			must(t, err)
			dev.startOn(t, tr)
			t.Cleanup(func() { dev.stop(t) })
			eventually(t, "model installed over MQTT", func() bool { return dev.activeVersion() == 1 })
			c.sendTask(id, trainTask(2, m1, 5))
			eventually(t, "update acked over MQTT", func() bool { return dev.agent.Stats().Acked == 1 })
			u := c.updatesFor(2)[0].Msg.(*fedgepb.Update)
			if len(u.DeltaBlobId) == 0 || u.SampleCount != 64 {
				t.Fatalf("update %+v", u)
			}
			if n := len(c.deltas[string(c.updatesFor(2)[0].MessageID)]); n != len(weights)/4 {
				t.Fatalf("delta of %d params", n)
			}
		})
	}
}
