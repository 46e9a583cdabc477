package wasmmodels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSizes is acceptance point 5: every C reference model is under 64 KiB.
func TestSizes(t *testing.T) {
	for _, name := range Names() {
		m, err := Get(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s.wasm: %d bytes", name, len(m.Wasm))
		if !m.NeedsWASI && len(m.Wasm) >= 64<<10 {
			t.Errorf("%s.wasm is %d bytes, limit 64 KiB", name, len(m.Wasm))
		}
	}
	if _, err := Get("nope"); err == nil {
		t.Fatal("Get of an unknown model succeeded")
	}
}

// TestBuildReproducible rebuilds every model with build.sh into a temporary
// directory and checks the result equals the committed, embedded bytes.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("clang build of every model: skipped under -short (make test-short); make test runs it")
	}
	_, errClang := exec.LookPath("clang")
	_, errClang14 := exec.LookPath("clang-14")
	if errClang != nil && errClang14 != nil {
		if os.Getenv("FEDGE_REQUIRE_EXTERNAL") == "" {
			t.Skip("clang not installed (Debian packages clang and lld); set FEDGE_REQUIRE_EXTERNAL to make this fatal")
		}
		t.Fatal(errClang)
	}
	out := t.TempDir()
	cmd := exec.Command("./build.sh")
	cmd.Env = append(os.Environ(), "OUT_DIR="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	for _, name := range Names() {
		got, err := os.ReadFile(filepath.Join(out, name+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, MustGet(name).Wasm) {
			t.Errorf("%s.wasm differs from a fresh build: run wasm-models/build.sh (make wasm)", name)
		}
	}
	got, err := os.ReadFile(filepath.Join(out, "simdpeak.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, SIMDPeak) {
		t.Error("bench/simdpeak.wasm differs from a fresh build: run wasm-models/build.sh (make wasm)")
	}
}
