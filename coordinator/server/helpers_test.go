package server

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedge-dev/fedge/coordinator/admin"
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

// postStart sends a start request to the running coordinator through the
// admin HTTP API and returns the status code and body.
func (h *harness) postStart(t *testing.T, r admin.StartRequest) (int, string) {
	t.Helper()
	const token = "0123456789abcdef-token"
	handler, err := admin.NewHandler(h.srv, admin.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(handler)
	defer hs.Close()
	body, _ := json.Marshal(r)
	req, err := http.NewRequest(http.MethodPost, hs.URL+"/v1/rounds", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg)
}
