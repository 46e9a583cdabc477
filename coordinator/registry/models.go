package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/atomicfile"
	"github.com/fedge-dev/fedge/internal/topics"
	wasmmodels "github.com/fedge-dev/fedge/wasm-models"
)

// MaxModuleBytes bounds a user-added module.
const MaxModuleBytes = 16 << 20

// ErrUnknownModel is returned for a model name that is not registered.
var ErrUnknownModel = errors.New("unknown model")

// Module is a registered model module.
type Module struct {
	Name    string
	Wasm    []byte // do not modify
	Hash    [32]byte
	Meta    runtime.Metadata
	Builtin bool
}

// Models is the model module registry: the embedded reference models and
// the .wasm files in its directory. It is safe for concurrent use.
type Models struct {
	dir      string
	host     *runtime.Host
	builtins map[string]bool

	mu    sync.Mutex
	cache map[string]*Module
}

// NewModels returns the registry over dir (created if missing), validating
// modules with host (which must grant WASI for the Go-built reference
// model). builtins restricts the embedded models offered (none given: all
// of wasmmodels.Names()).
func NewModels(dir string, host *runtime.Host, builtins ...string) (*Models, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("model registry: %w", err)
	}
	if len(builtins) == 0 {
		builtins = wasmmodels.Names()
	}
	m := &Models{dir: dir, host: host, builtins: map[string]bool{}, cache: map[string]*Module{}}
	for _, n := range builtins {
		if _, err := wasmmodels.Get(n); err != nil {
			return nil, fmt.Errorf("model registry: %w", err)
		}
		m.builtins[n] = true
	}
	return m, nil
}

// ValidateName checks a model name: a topic-safe id without dots.
func ValidateName(name string) error {
	if err := topics.ValidateID(name); err != nil {
		return fmt.Errorf("model name: %w", err)
	}
	if strings.Contains(name, ".") {
		return fmt.Errorf("model name %q: %w: no dots", name, topics.ErrInvalidID)
	}
	return nil
}

// Get returns the named module, validated.
func (m *Models) Get(ctx context.Context, name string) (*Module, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if mod, ok := m.cache[name]; ok {
		return mod, nil
	}
	var wasm []byte
	builtin := false
	if b, err := wasmmodels.Get(name); err == nil && m.builtins[name] {
		wasm, builtin = b.Wasm, true
	} else {
		raw, err := os.ReadFile(m.path(name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("model %q: %w", name, ErrUnknownModel)
		}
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
		wasm = raw
	}
	mod, err := m.validate(ctx, name, wasm)
	if err != nil {
		return nil, err
	}
	mod.Builtin = builtin
	m.cache[name] = mod
	return mod, nil
}

func (m *Models) path(name string) string { return filepath.Join(m.dir, name+".wasm") }

// validate compiles the module and reads its metadata from an instance.
func (m *Models) validate(ctx context.Context, name string, wasm []byte) (*Module, error) {
	if len(wasm) > MaxModuleBytes {
		return nil, fmt.Errorf("model %q: %d bytes, limit %d", name, len(wasm), MaxModuleBytes)
	}
	cm, err := m.host.Compile(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	in, err := cm.Instantiate(ctx, runtime.Options{})
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	defer func() { _ = in.Close(ctx) }()
	meta := in.Metadata()
	if meta.Params <= 0 {
		return nil, fmt.Errorf("model %q: %w: %d parameters", name, runtime.ErrBadMetadata, meta.Params)
	}
	return &Module{Name: name, Wasm: wasm, Hash: sha256.Sum256(wasm), Meta: meta}, nil
}

// List returns every registered module, by name.
func (m *Models) List(ctx context.Context) ([]*Module, error) {
	names := map[string]bool{}
	for n := range m.builtins {
		names[n] = true
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".wasm"); ok && !e.IsDir() && ValidateName(n) == nil {
			names[n] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	out := make([]*Module, 0, len(sorted))
	for _, n := range sorted {
		mod, err := m.Get(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, mod)
	}
	return out, nil
}

// Add validates wasm (it must compile, export the ABI and set up with its
// default dimensions) and registers it as name. Names are never reused:
// a version of the model refers to its module by name.
func (m *Models) Add(ctx context.Context, name string, wasm []byte) (*Module, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if _, err := wasmmodels.Get(name); err == nil {
		return nil, fmt.Errorf("add model %q: %w (name of a built-in model)", name, ErrExists)
	}
	if _, err := os.Stat(m.path(name)); err == nil {
		return nil, fmt.Errorf("add model %q: %w", name, ErrExists)
	}
	mod, err := m.validate(ctx, name, wasm)
	if err != nil {
		return nil, fmt.Errorf("add: %w", err)
	}
	if err := atomicfile.Write(m.path(name), wasm, 0o644); err != nil {
		return nil, fmt.Errorf("add model %q: %w", name, err)
	}
	m.mu.Lock()
	m.cache[name] = mod
	m.mu.Unlock()
	return mod, nil
}

// InitialWeights returns the model's seeded initial parameters.
func (m *Models) InitialWeights(ctx context.Context, name string, seed uint64) ([]float32, error) {
	mod, err := m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	cm, err := m.host.Compile(ctx, mod.Wasm)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	in, err := cm.Instantiate(ctx, runtime.Options{})
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	defer func() { _ = in.Close(ctx) }()
	if err := in.Init(ctx, seed); err != nil {
		return nil, fmt.Errorf("model %q: init: %w", name, err)
	}
	w, err := in.Params(ctx)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	return w, nil
}

// Host is the runtime host the registry validates with (also usable for
// server-side evaluation).
func (m *Models) Host() *runtime.Host { return m.host }
