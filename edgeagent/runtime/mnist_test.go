package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data/datatest"
)

// TestMNISTAccuracy is acceptance point 1: trained centrally through the
// WASM runtime on MNIST with B=10, mlp reaches at least 97% test accuracy
// within two epochs and logreg at least 91% within one. The figures are
// logged (go test -v) and, when FEDGE_REPORT_DIR is set, written to
// mnist_accuracy.txt there.
func TestMNISTAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("long training run: skipped under -short (make test-short); make test runs it")
	}
	train, test := datatest.MNIST(t)
	ctx := context.Background()
	h := newHost(t, Config{})
	// lr holds one learning rate per epoch (plain SGD, stepped down for
	// the second epoch).
	cases := []struct {
		model string
		lr    []float32
		want  float64
	}{
		{"logreg", []float32{0.05}, 0.91},
		{"mlp", []float32{0.05, 0.01}, 0.97},
	}
	var report string
	for _, tc := range cases {
		start := time.Now()
		in := instance(t, h, tc.model, Options{MaxBatch: 10})
		if err := in.Init(ctx, 1); err != nil {
			t.Fatal(err)
		}
		for e := 1; e <= len(tc.lr); e++ {
			lr := tc.lr[e-1]
			st, err := in.TrainEpochs(ctx, train, TrainConfig{Epochs: 1, BatchSize: 10, LR: lr, Seed: uint64(e)})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := in.Evaluate(ctx, test)
			if err != nil {
				t.Fatal(err)
			}
			line := fmt.Sprintf("mnist %s B=10 lr=%g epoch %d: train loss %.4f, test loss %.4f, test accuracy %.2f%% (%v)",
				tc.model, lr, e, st.Epochs[0].Loss, ev.Loss, 100*ev.Accuracy, time.Since(start).Round(time.Millisecond))
			t.Log(line)
			report += line + "\n"
			if e == len(tc.lr) && ev.Accuracy < tc.want {
				t.Errorf("%s: test accuracy %.2f%% after %d epochs, want >= %.0f%%", tc.model, 100*ev.Accuracy, e, 100*tc.want)
			}
		}
	}
	if dir := os.Getenv("FEDGE_REPORT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "mnist_accuracy.txt"), []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
