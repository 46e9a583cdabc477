// Package runtime is the sandboxed WebAssembly host for fedge models: it
// compiles a model module once (cached by its SHA-256), checks that it
// implements the fedge model ABI (wasm-models/ABI.md) before any use,
// instantiates it with a memory cap, bounds every call with a deadline and
// grants no filesystem, network, clock or randomness. An Instance trains
// with mini-batch SGD (optionally FedProx), predicts and evaluates.
//
// Many simulated devices share one compiled Module; each needs an Instance
// only while it trains, so a fleet simulator borrows instances from a Pool
// bounded by the number of concurrent trainers, loads the device's weights
// with SetParams, trains, reads them back with Params and returns the
// instance.
package runtime

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"go.uber.org/zap"
)

// ABIVersion is the newest version of the fedge model ABI this host
// implements. Version 2 adds the gradient exports (fedge_grad, fedge_grads,
// fedge_apply) that let a Group train one batch across several instances;
// version 1 modules keep working, single-threaded.
const ABIVersion = 2

// Errors callers can test with errors.Is. Every error returned by this
// package wraps one of them or an error from the model's data source.
var (
	ErrMissingExport    = errors.New("module lacks a required export")
	ErrABIVersion       = errors.New("unsupported model ABI version")
	ErrImportNotGranted = errors.New("module imports something the host does not grant")
	ErrDeadline         = errors.New("model call exceeded its deadline")
	ErrMemoryLimit      = errors.New("model exceeded its memory cap")
	ErrTrap             = errors.New("model trapped")
	ErrModel            = errors.New("model returned an error code")
	ErrNonFinite        = errors.New("model produced NaN or Inf")
	ErrBadMetadata      = errors.New("model metadata invalid")
	ErrShape            = errors.New("dimension mismatch")
	ErrClosed           = errors.New("instance closed")
	ErrCompile          = errors.New("module does not compile")
)

// Config configures a Host. The zero value is usable: defaults are filled in.
type Config struct {
	// MaxMemoryPages caps every instance's linear memory, in 64 KiB pages.
	// Default 4096 (256 MiB).
	MaxMemoryPages uint32
	// CallTimeout bounds every single call into a module (one training step,
	// one evaluation batch, setup). Default 30s.
	CallTimeout time.Duration
	// GrantWASI lets modules import wasi_snapshot_preview1, as built by Go's
	// wasip1 port. The WASI it sees has no files, no environment, no
	// arguments, fake clocks and a deterministic random source; its output
	// is discarded. Default false: modules may import nothing at all.
	GrantWASI bool
	// Interpreter selects wazero's interpreter instead of its compiler.
	Interpreter bool
	// CompilationCache, when set, shares compiled machine code between
	// hosts (e.g. wazero.NewCompilationCacheWithDir to keep it across
	// restarts); nil compiles in every host.
	CompilationCache wazero.CompilationCache
	// Logger receives debug events; nil means no logging.
	Logger *zap.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxMemoryPages == 0 {
		c.MaxMemoryPages = 4096
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Host owns one wazero runtime and the cache of compiled modules. It is safe
// for concurrent use.
type Host struct {
	cfg Config
	rt  wazero.Runtime
	log *zap.Logger

	mu    sync.Mutex
	cache map[[32]byte]*Module
}

// NewHost creates a host. Close releases it and every instance.
func NewHost(ctx context.Context, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	rc := wazero.NewRuntimeConfig()
	if cfg.Interpreter {
		rc = wazero.NewRuntimeConfigInterpreter()
	}
	rc = rc.WithCloseOnContextDone(true).WithMemoryLimitPages(cfg.MaxMemoryPages)
	if cfg.CompilationCache != nil {
		rc = rc.WithCompilationCache(cfg.CompilationCache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if cfg.GrantWASI {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
			_ = rt.Close(ctx)
			return nil, fmt.Errorf("instantiate wasi: %w", err)
		}
	}
	return &Host{cfg: cfg, rt: rt, log: cfg.Logger, cache: map[[32]byte]*Module{}}, nil
}

// Close closes the wazero runtime, every compiled module and instance.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	h.cache = map[[32]byte]*Module{}
	h.mu.Unlock()
	if err := h.rt.Close(ctx); err != nil {
		return fmt.Errorf("close wasm runtime: %w", err)
	}
	return nil
}

// Compile validates and compiles a module, or returns the cached Module
// when the same bytes (by SHA-256) were compiled before. Validation checks
// imports and the presence and signatures of every ABI export; the ABI
// version itself is checked when an instance is created.
func (h *Host) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	hash := sha256.Sum256(wasm)
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.cache[hash]; ok {
		return m, nil
	}
	start := time.Now()
	cm, err := h.rt.CompileModule(ctx, wasm)
	if err != nil {
		if strings.Contains(err.Error(), "over limit") {
			// wazero rejects a declared minimum memory above the cap.
			return nil, fmt.Errorf("module %x: %w: %w", hash[:6], ErrMemoryLimit, err)
		}
		return nil, fmt.Errorf("module %x: %w: %w", hash[:6], ErrCompile, err)
	}
	m := &Module{host: h, compiled: cm, Hash: hash}
	if err := m.validate(); err != nil {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("module %x: %w", hash[:6], err)
	}
	h.cache[hash] = m
	h.log.Debug("compiled wasm model", zap.Binary("sha256", hash[:]), zap.Duration("took", time.Since(start)),
		zap.Int("bytes", len(wasm)))
	return m, nil
}

// Evict drops a module from the cache and closes it; instances already
// created from it keep running until closed.
func (h *Host) Evict(ctx context.Context, hash [32]byte) error {
	h.mu.Lock()
	m, ok := h.cache[hash]
	delete(h.cache, hash)
	h.mu.Unlock()
	if !ok {
		return nil
	}
	if err := m.compiled.Close(ctx); err != nil {
		return fmt.Errorf("close module %x: %w", hash[:6], err)
	}
	return nil
}
