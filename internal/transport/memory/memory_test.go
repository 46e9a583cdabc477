package memory_test

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
)

func TestConformance(t *testing.T) {
	const limit = 1 << 20
	bus := memory.NewBus(memory.Config{MaxPayload: limit}, zaptest.NewLogger(t))
	transporttest.Run(t, transporttest.Harness{
		Fleet: "fleet1",
		Connect: func(t *testing.T, spec transporttest.ClientSpec) transport.Transport {
			c, err := bus.Connect(memory.ClientOptions{
				Identity:     spec.Identity,
				ClientID:     spec.ClientID,
				Will:         spec.Will,
				CleanSession: spec.CleanSession,
				QueueSize:    spec.QueueSize,
			})
			if err != nil {
				t.Fatalf("connect %s: %v", spec.ClientID, err)
			}
			return c
		},
		Kill:                 func(t *testing.T, tr transport.Transport) { tr.(*memory.Client).Kill() },
		PublishDenialVisible: true,
		MaxPayload:           limit,
	})
}
