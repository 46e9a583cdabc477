package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedge-dev/fedge/coordinator/store"
)

// Metrics are the coordinator's Prometheus metrics. All methods are safe on
// a nil *Metrics (they do nothing).
type Metrics struct {
	roundsCommitted prometheus.Counter
	roundsFailed    prometheus.Counter
	updatesAccepted prometheus.Counter
	updatesRefused  *prometheus.CounterVec
	messagesRefused *prometheus.CounterVec
	devicesOnline   prometheus.Gauge
	roundDuration   prometheus.Histogram
	roundAccuracy   prometheus.Gauge
	modelVersion    prometheus.Gauge
	bytesInTotal    prometheus.Counter
	bytesOutTotal   prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		roundsCommitted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_rounds_committed_total", Help: "Rounds that produced a new global model."}),
		roundsFailed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_rounds_failed_total", Help: "Rounds that failed (quorum not met, aggregation error)."}),
		updatesAccepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_updates_accepted_total", Help: "Updates accepted into an aggregate."}),
		updatesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedge_updates_rejected_total",
			Help: "Authenticated updates and evaluation results refused (or recorded late), by reason."}, []string{"reason"}),
		messagesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedge_messages_rejected_total",
			Help: "Inbound messages dropped before reaching the round (envelope checks: signature, sender, size...), by reason."}, []string{"reason"}),
		devicesOnline: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedge_devices_online", Help: "Enrolled devices currently online."}),
		roundDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fedge_round_duration_seconds",
			Help: "Duration of finished rounds.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)}),
		roundAccuracy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedge_round_accuracy", Help: "Accuracy of the last finished round (server, else federated, else training)."}),
		modelVersion:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedge_model_version", Help: "Latest committed global model version."}),
		bytesInTotal:  prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_bytes_in_total", Help: "Bytes received from devices (messages and update blobs)."}),
		bytesOutTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_bytes_out_total", Help: "Bytes published to devices (messages, and model blob chunks each time they are sent)."}),
	}
	for _, c := range []prometheus.Collector{m.roundsCommitted, m.roundsFailed, m.updatesAccepted, m.updatesRefused,
		m.messagesRefused, m.devicesOnline, m.roundDuration, m.roundAccuracy, m.modelVersion, m.bytesInTotal, m.bytesOutTotal} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) roundCommitted(version uint64) {
	if m != nil {
		m.roundsCommitted.Inc()
		m.modelVersion.Set(float64(version))
	}
}

func (m *Metrics) roundFinished(met *store.Metrics) {
	if m == nil {
		return
	}
	if met.Failed {
		m.roundsFailed.Inc()
	}
	m.roundDuration.Observe(float64(met.DurationMs) / 1000)
	m.roundAccuracy.Set(Accuracy(met))
}

// Accuracy is the best accuracy figure of a round: server-side evaluation,
// else federated evaluation, else the training accuracy.
func Accuracy(met *store.Metrics) float64 {
	switch {
	case met.HasServerEval:
		return met.ServerAccuracy
	case met.EvalSamples > 0:
		return met.EvalAccuracy
	}
	return met.TrainAccuracy
}

func (m *Metrics) updatesAcceptedAdd(n int) {
	if m != nil && n > 0 {
		m.updatesAccepted.Add(float64(n))
	}
}

func (m *Metrics) updateRefused(reason string, n uint64) {
	if m != nil {
		m.updatesRefused.WithLabelValues(reason).Add(float64(n))
	}
}

func (m *Metrics) messageRejected(reason string) {
	if m != nil {
		m.messagesRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) setOnline(n int) {
	if m != nil {
		m.devicesOnline.Set(float64(n))
	}
}

func (m *Metrics) bytesIn(n int) {
	if m != nil {
		m.bytesInTotal.Add(float64(n))
	}
}

func (m *Metrics) bytesOut(n int) {
	if m != nil {
		m.bytesOutTotal.Add(float64(n))
	}
}

// healthCollector exports the inbox counters and the health verdict at
// scrape time, from the server's own counters.
type healthCollector struct {
	s                                    *Server
	shed, queued, accepted, healthy, rtt *prometheus.Desc
	blobServed, blobRefused              *prometheus.Desc
}

func newHealthCollector(s *Server) *healthCollector {
	return &healthCollector{s: s,
		shed: prometheus.NewDesc("fedge_inbound_shed_total",
			"Inbound messages shed before they were handled (rate limit, full device or inbox queue, coalesced status), by kind and reason.", []string{"kind", "reason"}, nil),
		queued:   prometheus.NewDesc("fedge_inbound_queued", "Inbound messages waiting in the coordinator's inbox, by kind.", []string{"kind"}, nil),
		accepted: prometheus.NewDesc("fedge_inbound_queued_total", "Inbound messages queued in the coordinator's inbox, by kind.", []string{"kind"}, nil),
		healthy:  prometheus.NewDesc("fedge_healthy", "1 while /healthz says ok: serving, hearing the broker and keeping up.", nil, nil),
		rtt:      prometheus.NewDesc("fedge_probe_rtt_seconds", "Round trip of the last probe the coordinator sent itself through the broker.", nil, nil),
		blobServed: prometheus.NewDesc("fedge_blob_requests_served_total",
			"Devices' signed requests for model chunks that were served (chunks queued for publishing).", nil, nil),
		blobRefused: prometheus.NewDesc("fedge_blob_requests_refused_total",
			"Devices' requests for model chunks refused, by reason (invalid: unauthenticated, malformed or unknown blob; rate_limited).", []string{"reason"}, nil),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.shed
	ch <- c.queued
	ch <- c.accepted
	ch <- c.healthy
	ch <- c.rtt
	ch <- c.blobServed
	ch <- c.blobRefused
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.s.Health()
	for kind, reasons := range h.Inbox.Shed {
		for r, n := range reasons {
			ch <- prometheus.MustNewConstMetric(c.shed, prometheus.CounterValue, float64(n), kind, r)
		}
	}
	for kind, n := range h.Inbox.Queued {
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(n), kind)
	}
	for kind, n := range h.Inbox.Accepted {
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(n), kind)
	}
	ok := 0.0
	if h.OK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, ok)
	ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, float64(h.ProbeRTTMs)/1000)
	if snd := c.s.blobSender.Load(); snd != nil {
		st := snd.Stats()
		ch <- prometheus.MustNewConstMetric(c.blobServed, prometheus.CounterValue, float64(st.Requests))
		ch <- prometheus.MustNewConstMetric(c.blobRefused, prometheus.CounterValue, float64(st.BadRequests), "invalid")
		ch <- prometheus.MustNewConstMetric(c.blobRefused, prometheus.CounterValue, float64(st.RateLimited), "rate_limited")
	}
}
