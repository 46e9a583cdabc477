// Package wasmmodels embeds the fedge reference models, built from the
// sources in this directory by build.sh, and lists them. The ABI they
// implement is described in ABI.md.
package wasmmodels

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.wasm
var files embed.FS

// SIMDPeak is a module (not a model) whose export simd_peak(blocks i32,
// m f32, c f32) -> f32 runs blocks times 6,144 independent f32x4
// multiply-adds: the SIMD128 ceiling the peer benchmark relates each
// model's GFLOP/s to. Built by build.sh from c/simdpeak.c.
//
//go:embed bench/simdpeak.wasm
var SIMDPeak []byte

// SIMDPeakFlopsPerBlock is the floating-point operations of one block of
// SIMDPeak.
const SIMDPeakFlopsPerBlock = 64 * 12 * 4 * 2

// Model is one embedded module.
type Model struct {
	// Name is the file name without ".wasm": logreg, mlp, cnn or gologreg.
	Name string
	// Wasm is the module's bytes; callers must not modify it.
	Wasm []byte
	// NeedsWASI reports that the module imports wasi_snapshot_preview1
	// (the Go-built model); the C models import nothing.
	NeedsWASI bool
}

// Names returns the names of the embedded models, sorted.
func Names() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(fmt.Sprintf("wasmmodels: embedded directory unreadable: %v", err))
	}
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".wasm"))
	}
	sort.Strings(out)
	return out
}

// Get returns the named model.
func Get(name string) (Model, error) {
	b, err := files.ReadFile(name + ".wasm")
	if err != nil {
		return Model{}, fmt.Errorf("wasm model %q: not embedded (have %v)", name, Names())
	}
	return Model{Name: name, Wasm: b, NeedsWASI: name == "gologreg"}, nil
}

// MustGet is Get for the names this package documents; it panics on an
// unknown name, which is a programming error.
func MustGet(name string) Model {
	m, err := Get(name)
	if err != nil {
		panic(err)
	}
	return m
}
