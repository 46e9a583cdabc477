package mqtt_test

import (
	"testing"

	"github.com/fedge-dev/fedge/internal/transport/transporttest"
)

const (
	fleet      = "fleet1"
	maxPayload = 1 << 20
)

func TestConformanceEmbeddedTCP(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet, MaxPayload: maxPayload + 64<<10})
	transporttest.Run(t, transporttest.MQTTHarness(b, fleet, maxPayload))
}

func TestConformanceEmbeddedTLS(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet, TLS: true, MaxPayload: maxPayload + 64<<10})
	transporttest.Run(t, transporttest.MQTTHarness(b, fleet, maxPayload))
}

func TestConformanceMosquittoTLS(t *testing.T) {
	b := transporttest.StartMosquitto(t, transporttest.BrokerOptions{Fleet: fleet, TLS: true, MaxPayload: maxPayload + 64<<10})
	h := transporttest.MQTTHarness(b, fleet, maxPayload)
	h.SubscribeDenialSilent = true // Mosquitto 2.0 grants, then filters deliveries
	transporttest.Run(t, h)
}

func TestConformanceEmbeddedPipe(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet, Pipe: true, MaxPayload: maxPayload + 64<<10})
	transporttest.Run(t, transporttest.MQTTHarness(b, fleet, maxPayload))
}
