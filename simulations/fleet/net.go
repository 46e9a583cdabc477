package fleet

import (
	"context"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
)

// network connects the coordinator and the devices: the in-memory bus or
// the embedded MQTT broker. The broker serves the simulation on its
// in-process listener (broker.Config.Pipe): every client speaks MQTT to
// mochi as over TCP, through the same authentication and topic policy,
// but over in-memory connections, so a fleet of any size needs no socket
// or file descriptor per device (loopback TCP needs two, and the usual
// hard limit of open files stops a fleet at a few thousand devices).
type network interface {
	coordinator(ctx context.Context) (transport.Transport, error)
	device(ctx context.Context, id string, will *transport.Will) (transport.Transport, error)
	close()
}

func newNetwork(ctx context.Context, kind string, log *zap.Logger) (network, error) {
	switch kind {
	case "memory":
		// Sessions may queue many messages while a fleet connects at once.
		return &memNet{bus: memory.NewBus(memory.Config{MaxQueued: 1 << 20}, log.Named("bus"))}, nil
	case "broker":
		creds := broker.NewCredentials()
		b, err := broker.New(broker.Config{Fleet: FleetID, Pipe: true, Credentials: creds}, log.Named("broker"))
		if err != nil {
			return nil, fmt.Errorf("fleet: broker: %w", err)
		}
		if err := b.Start(); err != nil {
			return nil, fmt.Errorf("fleet: broker: %w", err)
		}
		return &brokerNet{b: b, creds: creds, log: log}, nil
	}
	return nil, fmt.Errorf("fleet: unknown transport %q", kind)
}

type memNet struct{ bus *memory.Bus }

func (n *memNet) coordinator(ctx context.Context) (transport.Transport, error) {
	return n.bus.Connect(memory.ClientOptions{
		Identity:  topics.Identity{Role: topics.RoleCoordinator, Fleet: FleetID},
		QueueSize: 8192,
	})
}

func (n *memNet) device(ctx context.Context, id string, will *transport.Will) (transport.Transport, error) {
	return n.bus.Connect(memory.ClientOptions{
		Identity: topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: FleetID},
		Will:     will, QueueSize: 16,
	})
}

func (n *memNet) close() {}

type brokerNet struct {
	b     *broker.Broker
	creds *broker.Credentials
	log   *zap.Logger

	mu      sync.Mutex
	clients []*mqtt.Client
}

func (n *brokerNet) dial(ctx context.Context, user string, id topics.Identity, will *transport.Will, queue int) (transport.Transport, error) {
	secret, password, err := broker.GenerateSecret()
	if err != nil {
		return nil, err
	}
	if err := n.creds.Add(user, secret, id); err != nil {
		return nil, fmt.Errorf("fleet: broker credentials of %s: %w", user, err)
	}
	c, err := mqtt.Dial(ctx, mqtt.Config{
		BrokerURL: "pipe://fleetsim", Dial: n.b.DialPipe, ClientID: user, Username: user, Password: password,
		Will: will, QueueSize: queue,
	}, n.log.Named("mqtt"))
	if err != nil {
		return nil, fmt.Errorf("fleet: connect %s: %w", user, err)
	}
	n.mu.Lock()
	n.clients = append(n.clients, c)
	n.mu.Unlock()
	return c, nil
}

func (n *brokerNet) coordinator(ctx context.Context) (transport.Transport, error) {
	return n.dial(ctx, "coordinator", topics.Identity{Role: topics.RoleCoordinator, Fleet: FleetID}, nil, 8192)
}

func (n *brokerNet) device(ctx context.Context, id string, will *transport.Will) (transport.Transport, error) {
	return n.dial(ctx, id, topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: FleetID}, will, 64)
}

func (n *brokerNet) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.clients {
		_ = c.Close()
	}
	_ = n.b.Close()
}
