package runtime

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/fedge-dev/fedge/wasm-models"
)

// TestMetadataProbedOnce: many concurrent callers asking for the metadata
// of one module with the same options share one setup probe, get what an
// instance reports, and each get their own copy.
func TestMetadataProbedOnce(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	m, err := h.Compile(ctx, wasmmodels.MustGet("logreg").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{MaxBatch: 1}
	want := instance(t, h, "logreg", opts).Metadata()
	const callers = 32
	got := make([]Metadata, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = m.Metadata(ctx, opts)
		}()
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Fatalf("caller %d: metadata %+v, an instance says %+v", i, got[i], want)
		}
	}
	if n := m.probes.Load(); n != 1 {
		t.Fatalf("%d probes for one set of options, want 1", n)
	}
	// A caller changing its copy does not change the cached value.
	got[0].Input[0] = -1
	got[0].Tensors[0].Shape[0] = -1
	again, err := m.Metadata(ctx, opts)
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("after a caller changed its copy: %+v, %v", again, err)
	}
	// Other options are probed separately, and the default batch is 64 as
	// for Instantiate.
	other, err := m.Metadata(ctx, Options{InputLen: 20, Classes: 3})
	if err != nil || other.Params != 63 || other.MaxBatch != 64 {
		t.Fatalf("logreg 20x3: %+v, %v", other, err)
	}
	if _, err := m.Metadata(ctx, Options{MaxBatch: 64, InputLen: 20, Classes: 3}); err != nil || m.probes.Load() != 2 {
		t.Fatalf("explicit default batch: %v, %d probes", err, m.probes.Load())
	}
}

// TestMetadataErrors: a module's own failure is cached like a result; a
// cancelled caller's failure is not, so the next caller probes again.
func TestMetadataErrors(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	m, err := h.Compile(ctx, wasmmodels.MustGet("mlp").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	bad := Options{MaxBatch: 4, InputLen: 20} // mlp has a fixed input
	for range 2 {
		if _, err := m.Metadata(ctx, bad); !errors.Is(err, ErrModel) && !errors.Is(err, ErrShape) {
			t.Fatalf("mlp with %+v: got %v", bad, err)
		}
	}
	if n := m.probes.Load(); n != 1 {
		t.Fatalf("%d probes for a failing setup, want 1 (cached)", n)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Metadata(cancelled, Options{MaxBatch: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v", err)
	}
	md, err := m.Metadata(ctx, Options{MaxBatch: 2})
	if err != nil || md.MaxBatch != 2 || md.Params == 0 {
		t.Fatalf("after a cancelled probe: %+v, %v", md, err)
	}
	// Beyond maxMetaProbes distinct options, results are still right
	// (probed without being remembered).
	for b := 3; b < 3+maxMetaProbes+2; b++ {
		md, err := m.Metadata(ctx, Options{MaxBatch: b})
		if err != nil || md.MaxBatch != b {
			t.Fatalf("batch %d: %+v, %v", b, md, err)
		}
	}
	if n := len(m.meta); n > maxMetaProbes {
		t.Fatalf("%d options remembered, bound %d", n, maxMetaProbes)
	}
}
