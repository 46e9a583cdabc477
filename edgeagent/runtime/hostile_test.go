package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data"
)

func hostileModule(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hostile", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileModules loads broken or malicious modules one after another
// into the same host. Each must fail with its own clear error at the stage
// named, and the host must then still load and train the benign module.
func TestHostileModules(t *testing.T) {
	ctx := context.Background()
	// The deadline leaves room for the memory bomb to reach its cap on a
	// loaded machine under -race.
	h := newHost(t, Config{MaxMemoryPages: 256, CallTimeout: 3 * time.Second})
	one, err := data.NewDataset([]float32{0.5}, []int{1}, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		module string
		stage  string // compile, instantiate or train
		want   error
		text   string
	}{
		{"missing_export", "compile", ErrMissingExport, `"fedge_train"`},
		{"wrong_abi", "instantiate", ErrABIVersion, "implements 99"},
		{"v2_without_grad", "instantiate", ErrMissingExport, "lacks fedge_grad"},
		{"ungranted_import", "compile", ErrImportNotGranted, "env.open"},
		{"wasi_import", "compile", ErrImportNotGranted, "wasi_snapshot_preview1.fd_write"},
		{"infinite_loop", "train", ErrDeadline, "fedge_train"},
		{"memory_bomb", "instantiate", ErrMemoryLimit, "of 256 pages"},
		{"huge_memory", "compile", ErrMemoryLimit, "min 60000 pages"},
		{"nan_weights", "train", ErrNonFinite, "parameter 1"},
		{"nan_loss", "train", ErrNonFinite, "loss NaN"},
	}
	for _, tc := range cases {
		t.Run(tc.module, func(t *testing.T) {
			start := time.Now()
			err := func() error {
				m, err := h.Compile(ctx, hostileModule(t, tc.module))
				if err != nil || tc.stage == "compile" {
					return err
				}
				in, err := m.Instantiate(ctx, Options{MaxBatch: 1})
				if err != nil || tc.stage == "instantiate" {
					return err
				}
				defer in.Close(ctx)
				_, err = in.TrainEpochs(ctx, one, TrainConfig{Epochs: 2, BatchSize: 1, LR: 0.1})
				return err
			}()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got error %v, want %v mentioning %q", err, tc.want, tc.text)
			}
			t.Logf("%s: %v (%v)", tc.module, err, time.Since(start).Round(time.Millisecond))
			// The host keeps working: the next module loads and trains.
			m, err := h.Compile(ctx, hostileModule(t, "benign"))
			if err != nil {
				t.Fatal(err)
			}
			in, err := m.Instantiate(ctx, Options{MaxBatch: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close(ctx)
			if _, err := in.TrainEpochs(ctx, one, TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1}); err != nil {
				t.Fatalf("benign module after %s: %v", tc.module, err)
			}
		})
	}
}

// TestInfiniteLoopStopsAtDeadline checks the deadline is what stops the
// loop: the call returns close to CallTimeout, not long after.
func TestInfiniteLoopStopsAtDeadline(t *testing.T) {
	ctx := context.Background()
	const timeout = 200 * time.Millisecond
	h := newHost(t, Config{CallTimeout: timeout})
	m, err := h.Compile(ctx, hostileModule(t, "infinite_loop"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := m.Instantiate(ctx, Options{MaxBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	one, _ := data.NewDataset([]float32{0.5}, []int{1}, 1, 2)
	start := time.Now()
	_, err = in.TrainBatch(ctx, one, []int{0}, 0.1, 0)
	took := time.Since(start)
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("got %v, want ErrDeadline", err)
	}
	if took < timeout || took > timeout+5*time.Second {
		t.Fatalf("stopped after %v, deadline %v", took, timeout)
	}
	if _, err := in.Params(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("instance after deadline: got %v, want ErrClosed", err)
	}
	// A caller's own cancellation is reported as such, not as a deadline.
	in2, err := m.Instantiate(ctx, Options{MaxBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := in2.TrainBatch(cctx, one, []int{0}, 0.1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: got %v", err)
	}
}

// TestHostileModulesMatchSource rebuilds the hostile modules from their WAT
// source with wabt and checks the committed .wasm files are current.
func TestHostileModulesMatchSource(t *testing.T) {
	wat2wasm, err := exec.LookPath("wat2wasm")
	if err != nil {
		if os.Getenv("FEDGE_REQUIRE_EXTERNAL") == "" {
			t.Skip("wat2wasm (Debian package wabt) not installed; set FEDGE_REQUIRE_EXTERNAL to make this fatal")
		}
		t.Fatal(err)
	}
	wats, _ := filepath.Glob(filepath.Join("testdata", "hostile", "*.wat"))
	if len(wats) < 10 {
		t.Fatalf("found %d .wat files", len(wats))
	}
	dir := t.TempDir()
	for _, w := range wats {
		out := filepath.Join(dir, "m.wasm")
		if b, err := exec.Command(wat2wasm, w, "-o", out).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", w, err, b)
		}
		got, _ := os.ReadFile(out)
		want, err := os.ReadFile(strings.TrimSuffix(w, ".wat") + ".wasm")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: committed .wasm is stale; run testdata/hostile/gen.sh", w)
		}
	}
}
