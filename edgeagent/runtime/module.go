package runtime

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// Module is a validated, compiled model module, shared by all its instances.
type Module struct {
	// Hash is the SHA-256 of the module bytes.
	Hash     [32]byte
	host     *Host
	compiled wazero.CompiledModule
	grad     bool // has the ABI version 2 gradient exports

	metaMu sync.Mutex
	meta   map[Options]*metaProbe // see Metadata
	probes atomic.Int64           // instances Metadata created (for tests)
}

// maxMetaProbes bounds the options remembered per module by Metadata.
const maxMetaProbes = 16

// metaProbe is the outcome of one setup probe, shared by concurrent callers
// of Metadata with the same options.
type metaProbe struct {
	done chan struct{}
	meta Metadata
	err  error
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f32 = api.ValueTypeF32
)

// abiExports lists every function export of ABI version 1 with its
// signature (params, results).
var abiExports = map[string][2][]api.ValueType{
	"fedge_abi_version": {nil, {i32}},
	"fedge_setup":       {{i32, i32, i32}, {i32}},
	"fedge_meta_ptr":    {nil, {i32}},
	"fedge_meta_len":    {nil, {i32}},
	"fedge_param_count": {nil, {i32}},
	"fedge_params":      {nil, {i32}},
	"fedge_global":      {nil, {i32}},
	"fedge_inputs":      {nil, {i32}},
	"fedge_labels":      {nil, {i32}},
	"fedge_scores":      {nil, {i32}},
	"fedge_result":      {nil, {i32}},
	"fedge_init":        {{i64}, {i32}},
	"fedge_train":       {{i32, f32, f32}, {i32}},
	"fedge_evaluate":    {{i32}, {i32}},
	"fedge_predict":     {{i32}, {i32}},
}

// gradExports are the exports ABI version 2 adds; a version 2 module has
// all of them, a version 1 module may have none.
var gradExports = map[string][2][]api.ValueType{
	"fedge_grad":  {{i32, f32}, {i32}},
	"fedge_grads": {nil, {i32}},
	"fedge_apply": {{f32, f32}, {i32}},
}

const wasiModule = "wasi_snapshot_preview1"

func (m *Module) validate() error {
	for _, def := range m.compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		if mod == wasiModule && m.host.cfg.GrantWASI {
			continue
		}
		return fmt.Errorf("%w: function %s.%s", ErrImportNotGranted, mod, name)
	}
	for _, def := range m.compiled.ImportedMemories() {
		mod, name, _ := def.Import()
		return fmt.Errorf("%w: memory %s.%s", ErrImportNotGranted, mod, name)
	}
	if _, ok := m.compiled.ExportedMemories()["memory"]; !ok {
		return fmt.Errorf("%w: memory \"memory\"", ErrMissingExport)
	}
	exports := m.compiled.ExportedFunctions()
	if def, ok := exports["_initialize"]; ok && (len(def.ParamTypes()) != 0 || len(def.ResultTypes()) != 0) {
		return fmt.Errorf("%w: function \"_initialize\" must take and return nothing", ErrMissingExport)
	}
	for name, sig := range abiExports {
		if err := checkExport(exports, name, sig); err != nil {
			return err
		}
	}
	have := 0
	for name := range gradExports {
		if _, ok := exports[name]; ok {
			have++
		}
	}
	if have > 0 {
		for name, sig := range gradExports {
			if err := checkExport(exports, name, sig); err != nil {
				return fmt.Errorf("%w (ABI version 2 exports come together)", err)
			}
		}
		m.grad = true
	}
	return nil
}

func checkExport(exports map[string]api.FunctionDefinition, name string, sig [2][]api.ValueType) error {
	def, ok := exports[name]
	if !ok {
		return fmt.Errorf("%w: function %q", ErrMissingExport, name)
	}
	if !sameTypes(def.ParamTypes(), sig[0]) || !sameTypes(def.ResultTypes(), sig[1]) {
		return fmt.Errorf("%w: function %q has signature %v -> %v, want %v -> %v", ErrMissingExport, name,
			typeNames(def.ParamTypes()), typeNames(def.ResultTypes()), typeNames(sig[0]), typeNames(sig[1]))
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typeNames(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}

// Options are the dimensions requested from a model at setup.
type Options struct {
	// MaxBatch is the largest batch the instance accepts. Default 64.
	MaxBatch int
	// InputLen and Classes configure models with free dimensions (logreg);
	// 0 keeps the model's default. Fixed-shape models reject other values.
	InputLen, Classes int
}

// Metadata returns what an instance created with opts would report as its
// Metadata, without keeping one: the first call per options instantiates
// the module, runs setup, reads the metadata and closes the instance; later
// calls (from any goroutine) return a copy of that result. Setup runs in a
// sandbox without clocks, randomness or host state, so its metadata depends
// only on the module and the options. Thousands of simulated devices that
// check the same model version therefore pay for one instance, not one
// each. An error caused by ctx (cancellation, deadline) is not cached;
// other errors are.
func (m *Module) Metadata(ctx context.Context, opts Options) (Metadata, error) {
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 64
	}
	for {
		m.metaMu.Lock()
		if m.meta == nil {
			m.meta = map[Options]*metaProbe{}
		}
		p, ok := m.meta[opts]
		if !ok && len(m.meta) >= maxMetaProbes {
			// Callers asking for many different options are not the
			// case this cache is for: probe without remembering.
			m.metaMu.Unlock()
			m.probes.Add(1)
			in, err := m.Instantiate(ctx, opts)
			if err != nil {
				return Metadata{}, err
			}
			md := in.Metadata()
			return md, in.Close(ctx)
		}
		if !ok {
			p = &metaProbe{done: make(chan struct{})}
			m.meta[opts] = p
		}
		m.metaMu.Unlock()
		if ok {
			select {
			case <-p.done:
			case <-ctx.Done():
				return Metadata{}, fmt.Errorf("module %x metadata: %w", m.Hash[:6], ctx.Err())
			}
			if p.err == nil {
				return p.meta.clone(), nil
			}
			if errors.Is(p.err, context.Canceled) || errors.Is(p.err, context.DeadlineExceeded) {
				// The prober gave up because of its own context: probe again.
				continue
			}
			return Metadata{}, p.err
		}
		m.probes.Add(1)
		in, err := m.Instantiate(ctx, opts)
		if err == nil {
			p.meta = in.Metadata().clone()
			err = in.Close(ctx)
		}
		p.err = err
		if err != nil && ctx.Err() != nil {
			// Not the module's fault: let the next caller probe again.
			p.err = fmt.Errorf("%w: %w", ctx.Err(), err)
			m.metaMu.Lock()
			delete(m.meta, opts)
			m.metaMu.Unlock()
		}
		close(p.done)
		if p.err != nil {
			return Metadata{}, p.err
		}
		return p.meta.clone(), nil
	}
}

// clone returns a deep copy, so that callers cannot change a cached value.
func (md Metadata) clone() Metadata {
	md.Input = slices.Clone(md.Input)
	md.Tensors = slices.Clone(md.Tensors)
	for i := range md.Tensors {
		md.Tensors[i].Shape = slices.Clone(md.Tensors[i].Shape)
	}
	return md
}

// Instantiate creates an instance with its own linear memory, checks the
// ABI version, runs setup and parses the metadata.
func (m *Module) Instantiate(ctx context.Context, opts Options) (*Instance, error) {
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 64
	}
	if opts.MaxBatch < 0 || opts.MaxBatch > math.MaxInt32 || opts.InputLen < 0 || opts.InputLen > math.MaxInt32 ||
		opts.Classes < 0 || opts.Classes > math.MaxInt32 {
		return nil, fmt.Errorf("instantiate: %w: options %+v", ErrShape, opts)
	}
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	callCtx, cancel := context.WithTimeout(ctx, m.host.cfg.CallTimeout)
	defer cancel()
	mod, err := m.host.rt.InstantiateModule(callCtx, m.compiled, mc)
	if err != nil {
		return nil, fmt.Errorf("instantiate module %x: %w", m.Hash[:6], classify(err, nil, m.host.cfg.MaxMemoryPages))
	}
	in := &Instance{module: m, mod: mod, maxPages: m.host.cfg.MaxMemoryPages}
	in.fn = make(map[string]api.Function, len(abiExports))
	for name := range abiExports {
		in.fn[name] = mod.ExportedFunction(name)
	}
	if m.grad {
		for name := range gradExports {
			in.fn[name] = mod.ExportedFunction(name)
		}
	}
	if init := mod.ExportedFunction("_initialize"); init != nil {
		// Reactor modules (Go's c-shared wasip1 build) initialise their
		// language runtime here, under the same deadline as any call.
		if _, err := init.Call(callCtx); err != nil {
			_ = mod.Close(ctx)
			return nil, fmt.Errorf("instantiate module %x: _initialize: %w", m.Hash[:6],
				classify(err, mod, m.host.cfg.MaxMemoryPages))
		}
	}
	if err := in.start(ctx, opts); err != nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("instantiate module %x: %w", m.Hash[:6], err)
	}
	return in, nil
}

// classify maps a wazero call error to this package's sentinel errors.
func classify(err error, mod api.Module, maxPages uint32) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w: %w", ErrDeadline, err)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("%w: %w", context.Canceled, err)
		}
		return fmt.Errorf("%w: exit code %d: %w", ErrTrap, exit.ExitCode(), err)
	}
	// A trap with memory near the cap is almost always a failed memory.grow
	// the module did not handle; report it as such.
	if mod != nil && mod.Memory() != nil && uint64(mod.Memory().Size()) >= uint64(maxPages)*65536*7/8 {
		return fmt.Errorf("%w: trapped with memory at %d of %d pages: %w", ErrMemoryLimit,
			mod.Memory().Size()/65536, maxPages, err)
	}
	return fmt.Errorf("%w: %w", ErrTrap, err)
}
