package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// KeepVersions is how many model versions a ModelStore keeps: the active
// one and the two before it, all loadable.
const KeepVersions = 3

// Errors of model stores.
var (
	ErrNoModel       = errors.New("no model installed")
	ErrUnknownModel  = errors.New("model version not stored")
	ErrModelMismatch = errors.New("model bytes do not match their manifest")
)

// Model is one verified model version: its signed manifest, the WASM module
// and the little-endian float32 weights. Callers must not modify the slices.
type Model struct {
	Manifest *fedgepb.ModelManifest
	Wasm     []byte
	Weights  []byte
}

// Check verifies lengths and SHA-256 hashes of the module and weights
// against the manifest (not the manifest's signature).
func (m Model) Check() error {
	mf := m.Manifest
	if mf == nil {
		return fmt.Errorf("%w: no manifest", ErrModelMismatch)
	}
	if uint64(len(m.Wasm)) != mf.WasmLength {
		return fmt.Errorf("%w: module of v%d has %d bytes, manifest says %d", ErrModelMismatch, mf.Version, len(m.Wasm), mf.WasmLength)
	}
	if uint64(len(m.Weights)) != mf.WeightsLength {
		return fmt.Errorf("%w: weights of v%d have %d bytes, manifest says %d", ErrModelMismatch, mf.Version, len(m.Weights), mf.WeightsLength)
	}
	if h := sha256.Sum256(m.Wasm); !bytes.Equal(h[:], mf.WasmHash) {
		return fmt.Errorf("%w: module hash of v%d", ErrModelMismatch, mf.Version)
	}
	if h := sha256.Sum256(m.Weights); !bytes.Equal(h[:], mf.WeightsHash) {
		return fmt.Errorf("%w: weights hash of v%d", ErrModelMismatch, mf.Version)
	}
	return nil
}

// ModelStore keeps installed model versions and which one is active.
// Implementations are safe for concurrent use.
type ModelStore interface {
	// Install stores m (which the caller has verified) and makes it the
	// active version atomically: after a crash either the previous or the
	// new version is active, never a partial one. Older versions beyond
	// KeepVersions are deleted.
	Install(m Model) error
	// Versions returns the manifests of the stored versions, the active
	// one first, then the others newest first; empty when none.
	Versions() ([]*fedgepb.ModelManifest, error)
	// Load returns a stored version with its bytes checked against its
	// manifest.
	Load(version uint64) (Model, error)
}

// ActiveModel returns the active model of s, or ErrNoModel.
func ActiveModel(s ModelStore) (Model, error) {
	vs, err := s.Versions()
	if err != nil {
		return Model{}, err
	}
	if len(vs) == 0 {
		return Model{}, ErrNoModel
	}
	return s.Load(vs[0].Version)
}

// MemoryModelStore is the in-memory ModelStore of simulated agents. It
// keeps the caller's slices (shared, never modified).
type MemoryModelStore struct {
	mu     sync.Mutex
	models []Model // active first, then newest first
}

// NewMemoryModelStore returns an empty store.
func NewMemoryModelStore() *MemoryModelStore { return &MemoryModelStore{} }

// Install implements ModelStore.
func (s *MemoryModelStore) Install(m Model) error {
	if err := m.Check(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models = slices.DeleteFunc(s.models, func(o Model) bool { return o.Manifest.Version == m.Manifest.Version })
	s.models = slices.Insert(s.models, 0, m)
	if len(s.models) > KeepVersions {
		s.models = s.models[:KeepVersions]
	}
	return nil
}

// Versions implements ModelStore.
func (s *MemoryModelStore) Versions() ([]*fedgepb.ModelManifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*fedgepb.ModelManifest, len(s.models))
	for i, m := range s.models {
		out[i] = m.Manifest
	}
	return out, nil
}

// Load implements ModelStore.
func (s *MemoryModelStore) Load(version uint64) (Model, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.models {
		if m.Manifest.Version == version {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("load v%d: %w", version, ErrUnknownModel)
}
