package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/coordinator/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
}

func openBadger(t *testing.T, dir string) *store.Badger {
	t.Helper()
	s, err := store.Open(store.BadgerOptions(dir), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBadgerConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openBadger(t, t.TempDir()) })
}

func TestBadgerLowMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(store.LowMemoryBadgerOptions(t.TempDir()), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestBadgerReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openBadger(t, dir)
	mv := storetest.SampleModelVersion(4, 3)
	b := &store.Batch{
		Runs:          []*store.Run{storetest.SampleRun(1)},
		Updates:       []*store.Update{storetest.SampleUpdate(2, "dev-a", 0)},
		ModelVersions: []*store.ModelVersion{mv},
		Audit:         []*store.AuditEntry{{Actor: "admin", Action: "round start"}},
	}
	if err := s.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NextSequence(ctx, "run"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBadger(t, dir)
	defer s.Close()
	got, err := s.ModelVersion(ctx, 4)
	if err != nil || !proto.Equal(got, mv) {
		t.Fatalf("model version after reopen: %v, %v", got, err)
	}
	if ups, err := s.Updates(ctx, 2); err != nil || len(ups) != 1 {
		t.Fatalf("updates after reopen: %v, %v", ups, err)
	}
	if n, err := s.NextSequence(ctx, "run"); err != nil || n != 2 {
		t.Fatalf("sequence after reopen: %d, %v (want 2)", n, err)
	}
	if err := s.Apply(ctx, &store.Batch{Audit: []*store.AuditEntry{{Actor: "admin", Action: "round stop"}}}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Audit(ctx, 0, 0); err != nil || len(a) != 2 || a[1].Seq != 2 {
		t.Fatalf("audit seq continues after reopen: %v, %v", a, err)
	}
}

func TestBadgerLocked(t *testing.T) {
	dir := t.TempDir()
	s := openBadger(t, dir)
	defer s.Close()
	_, err := store.Open(store.BadgerOptions(dir), nil)
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open of a held directory: got %v, want ErrLocked", err)
	}
}

func TestBadgerCorruptDir(t *testing.T) {
	dir := t.TempDir()
	s := openBadger(t, dir)
	if err := s.Apply(context.Background(), &store.Batch{Runs: []*store.Run{storetest.SampleRun(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("this is not a badger manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(store.BadgerOptions(dir), nil)
	if err == nil {
		t.Fatal("Open of a directory with a corrupt MANIFEST succeeded")
	}
	if want := "open store " + dir; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Errorf("error does not name the directory: %v", err)
	}
}

func TestBadgerValueLogGC(t *testing.T) {
	s := openBadger(t, t.TempDir())
	defer s.Close()
	if _, err := s.RunValueLogGC(0.5); err != nil {
		t.Fatalf("GC of a fresh store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunValueLogGC(0.5); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("GC after Close: got %v, want ErrClosed", err)
	}
}

func TestOptions(t *testing.T) {
	for name, o := range map[string]struct{ sync bool }{
		"default":    {store.BadgerOptions("x").SyncWrites},
		"low memory": {store.LowMemoryBadgerOptions("x").SyncWrites},
	} {
		if !o.sync {
			t.Errorf("%s options: SyncWrites off", name)
		}
	}
	lo, hi := store.LowMemoryBadgerOptions("x"), store.BadgerOptions("x")
	if lo.MemTableSize*int64(lo.NumMemtables) >= hi.MemTableSize*int64(hi.NumMemtables) || lo.BlockCacheSize != 0 {
		t.Errorf("low-memory options are not smaller: memtables %d x %d, block cache %d", lo.NumMemtables, lo.MemTableSize, lo.BlockCacheSize)
	}
}
