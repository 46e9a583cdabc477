package server

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
)

func wiretestKey(name string) ed25519.PrivateKey { return wiretest.Key(name) }

// bgAdmin is a coordinator-role client of the test fleet (no ACL limits).
func bgAdmin(name string) memory.ClientOptions {
	return memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: testFleet}, ClientID: name, QueueSize: 256}
}

// metricValue reads a counter or gauge (label "reason" if given).
func metricValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	if strings.HasSuffix(name, "_total") {
		return 0
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
