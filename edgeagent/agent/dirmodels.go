package agent

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// File names inside a DirModelStore.
const (
	activeFile   = "active"
	manifestFile = "manifest.pb"
	wasmFile     = "model.wasm"
	weightsFile  = "weights.f32"
	tmpPrefix    = ".tmp-"
)

// DirModelStore keeps model versions on disk, one directory per version
// (v00000000000000000007/{manifest.pb,model.wasm,weights.f32}), and the
// active version number in the file "active". Installing writes and fsyncs
// a temporary directory, renames it into place, then replaces "active" by
// renaming a fsynced temporary file, and fsyncs the directory after each
// rename. Every load re-verifies the stored manifest with the pinned
// coordinator key and the files against the manifest.
type DirModelStore struct {
	dir string
	pub ed25519.PublicKey
	mu  sync.Mutex
}

// OpenDirModelStore opens (creating) a model directory; leftovers of an
// interrupted install are removed.
func OpenDirModelStore(dir string, coordinatorKey ed25519.PublicKey) (*DirModelStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("model store: remove leftover: %w", err)
			}
		}
	}
	return &DirModelStore{dir: dir, pub: coordinatorKey}, nil
}

func versionDir(v uint64) string { return fmt.Sprintf("v%020d", v) }

// writeFileSync writes data to path and fsyncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Install implements ModelStore.
func (s *DirModelStore) Install(m Model) error {
	if err := m.Check(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Manifest)
	if err != nil {
		return fmt.Errorf("install: marshal manifest: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := m.Manifest.Version
	tmp, err := os.MkdirTemp(s.dir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("install v%d: %w", v, err)
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	for name, b := range map[string][]byte{manifestFile: raw, wasmFile: m.Wasm, weightsFile: m.Weights} {
		if err := writeFileSync(filepath.Join(tmp, name), b); err != nil {
			return fmt.Errorf("install v%d: %w", v, err)
		}
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("install v%d: %w", v, err)
	}
	final := filepath.Join(s.dir, versionDir(v))
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("install v%d: %w", v, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("install v%d: %w", v, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("install v%d: %w", v, err)
	}
	if err := s.setActive(v); err != nil {
		return fmt.Errorf("install v%d: activate: %w", v, err)
	}
	return s.prune(v)
}

// setActive atomically points "active" at v.
func (s *DirModelStore) setActive(v uint64) error {
	tmp := filepath.Join(s.dir, tmpPrefix+activeFile)
	if err := writeFileSync(tmp, []byte(strconv.FormatUint(v, 10)+"\n")); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, activeFile)); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// stored lists the version numbers present, descending.
func (s *DirModelStore) stored() ([]uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var vs []uint64
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || len(name) != 21 || name[0] != 'v' {
			continue
		}
		v, err := strconv.ParseUint(name[1:], 10, 64)
		if err != nil {
			continue
		}
		vs = append(vs, v)
	}
	slices.Sort(vs)
	slices.Reverse(vs)
	return vs, nil
}

// prune deletes versions beyond KeepVersions, never the active one.
func (s *DirModelStore) prune(active uint64) error {
	vs, err := s.stored()
	if err != nil {
		return fmt.Errorf("prune models: %w", err)
	}
	vs = slices.DeleteFunc(vs, func(v uint64) bool { return v == active })
	for i, v := range vs {
		if i+1 < KeepVersions {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, versionDir(v))); err != nil {
			return fmt.Errorf("prune model v%d: %w", v, err)
		}
	}
	return nil
}

func (s *DirModelStore) active() (uint64, bool, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, activeFile))
	if os.IsNotExist(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read active model: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%w: active model pointer %q", ErrCorrupt, b)
	}
	return v, true, nil
}

func (s *DirModelStore) manifest(v uint64) (*fedgepb.ModelManifest, error) {
	raw, err := os.ReadFile(filepath.Join(s.dir, versionDir(v), manifestFile))
	if err != nil {
		return nil, fmt.Errorf("model v%d: %w", v, err)
	}
	m, err := wire.DecodeManifest(raw, s.pub, wire.Limits{})
	if err != nil {
		return nil, fmt.Errorf("model v%d: stored manifest: %w", v, err)
	}
	if m.Version != v {
		return nil, fmt.Errorf("%w: directory of v%d holds manifest v%d", ErrCorrupt, v, m.Version)
	}
	return m, nil
}

// Versions implements ModelStore. Versions whose manifest does not verify
// are left out.
func (s *DirModelStore) Versions() ([]*fedgepb.ModelManifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	act, ok, err := s.active()
	if err != nil {
		return nil, err
	}
	vs, err := s.stored()
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	var out []*fedgepb.ModelManifest
	if ok {
		m, err := s.manifest(act)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	for _, v := range vs {
		if ok && v == act {
			continue
		}
		if m, err := s.manifest(v); err == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// Load implements ModelStore.
func (s *DirModelStore) Load(version uint64) (Model, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.manifest(version)
	if errors.Is(err, fs.ErrNotExist) {
		return Model{}, fmt.Errorf("load v%d: %w", version, ErrUnknownModel)
	}
	if err != nil {
		return Model{}, err
	}
	dir := filepath.Join(s.dir, versionDir(version))
	out := Model{Manifest: m}
	if out.Wasm, err = os.ReadFile(filepath.Join(dir, wasmFile)); err != nil {
		return Model{}, fmt.Errorf("load v%d: %w", version, err)
	}
	if out.Weights, err = os.ReadFile(filepath.Join(dir, weightsFile)); err != nil {
		return Model{}, fmt.Errorf("load v%d: %w", version, err)
	}
	if err := out.Check(); err != nil {
		return Model{}, fmt.Errorf("load v%d: %w", version, err)
	}
	return out, nil
}
