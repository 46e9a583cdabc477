package broker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// brokerMetric is one Stats field exported to Prometheus.
type brokerMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(Stats) float64
}

// Collector returns a Prometheus collector of the broker's Stats, as
// fedge_broker_* metrics read at every scrape. Register it once per broker.
func (b *Broker) Collector() prometheus.Collector {
	m := func(name, help string, kind prometheus.ValueType, v func(Stats) float64) brokerMetric {
		return brokerMetric{desc: prometheus.NewDesc("fedge_broker_"+name, help, nil, nil), kind: kind, value: v}
	}
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	return &collector{b: b, metrics: []brokerMetric{
		m("clients_connected", "MQTT clients connected now.", g, func(s Stats) float64 { return float64(s.Connected) }),
		m("sessions", "Client ids with a session (connected or persistent).", g, func(s Stats) float64 { return float64(s.Sessions) }),
		m("connects_accepted_total", "CONNECTs accepted.", c, func(s Stats) float64 { return float64(s.ConnectsAccepted) }),
		m("connects_refused_total", "CONNECTs refused (credentials, client id, fleet, reserved id, will).", c, func(s Stats) float64 { return float64(s.ConnectsRefused) }),
		m("publish_denied_total", "Publishes dropped by the topic policy.", c, func(s Stats) float64 { return float64(s.PublishDenied) }),
		m("subscribe_denied_total", "Subscriptions and deliveries refused by the topic policy.", c, func(s Stats) float64 { return float64(s.SubscribeDenied) }),
		m("will_denied_total", "Last wills refused or dropped.", c, func(s Stats) float64 { return float64(s.WillDenied) }),
		m("oversized_total", "Publishes over the payload limit.", c, func(s Stats) float64 { return float64(s.Oversized) }),
		m("preauth_rejected_total", "Connections closed before CONNECT.", c, func(s Stats) float64 { return float64(s.PreAuthRejected) }),
		m("rate_limited_total", "Device publishes dropped over the per-device publish rate.", c, func(s Stats) float64 { return float64(s.RateLimited) }),
		m("retain_denied_total", "Device publishes dropped for their retain flag.", c, func(s Stats) float64 { return float64(s.RetainDenied) }),
		m("messages_received_total", "PUBLISH packets received.", c, func(s Stats) float64 { return float64(s.MessagesReceived) }),
		m("messages_sent_total", "PUBLISH packets sent.", c, func(s Stats) float64 { return float64(s.MessagesSent) }),
		m("queue_dropped_total", "QoS 1 messages dropped because a client's queue was full.", c, func(s Stats) float64 { return float64(s.QueueDropped) }),
		m("writes_dropped_total", "Messages dropped because a client's write queue was full.", c, func(s Stats) float64 { return float64(s.WritesDropped) }),
	}}
}

type collector struct {
	b       *Broker
	metrics []brokerMetric
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
}
