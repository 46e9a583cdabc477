package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecureRoundProcesses runs `round start --secure` with a coordinator
// and four agents as separate processes over the embedded broker: every
// round is aggregated by SecAgg+ (the coordinator sees masked inputs only)
// and the model learns.
func TestSecureRoundProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f, brokerAddr := startEmbeddedFleet(t, ctx)
	const n = 4
	f.addAgents(t, ctx, n, embeddedBroker(brokerAddr))
	st := f.train(t, 2, n, "--model", "logreg", "--rounds", "2", "--min-clients", "4",
		"--server-eval", "--lr", "0.05", "--batch-size", "10", "--deadline", "2m", "--secure")
	if st.Run.Secure == nil || st.Run.Secure.Threshold != 0.6 {
		t.Fatalf("run %+v is not reported secure with the default threshold", st.Run)
	}
	logb, err := os.ReadFile(filepath.Join(f.dir, "coordinator.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logb), "secure round started"); n != 2 {
		t.Fatalf("coordinator log has %d secure round starts, want 2", n)
	}
	if a := st.History[1].ServerAccuracy; a < 0.85 {
		t.Fatalf("test accuracy %.4f after 2 secure rounds, want at least 0.85", a)
	}
}
