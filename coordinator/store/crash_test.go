package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/coordinator/store/storetest"
)

const (
	envCrashDir   = "FEDGE_STORE_CRASH_DIR"
	envCrashStart = "FEDGE_STORE_CRASH_START"
)

// crashBatch is the i-th batch the child writes: a round, an update of it,
// its metrics and an audit entry, so a torn batch is visible.
func crashBatch(i uint64) *store.Batch {
	return &store.Batch{
		Rounds:  []*store.Round{storetest.SampleRound(i, 1)},
		Updates: []*store.Update{storetest.SampleUpdate(i, "dev-a", 0)},
		Metrics: []*store.Metrics{{RunId: 1, RoundId: i, Accepted: uint32(i)}},
		Audit:   []*store.AuditEntry{{Actor: "crash", Action: "write", Target: strconv.FormatUint(i, 10)}},
	}
}

// crashChild writes batches forever, printing each index once Apply
// returned nil, until the parent kills it.
func crashChild(dir string, start uint64) {
	s, err := store.Open(store.BadgerOptions(dir), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	for i := start; ; i++ {
		if err := s.Apply(context.Background(), crashBatch(i)); err != nil {
			fmt.Fprintln(os.Stderr, "child apply:", err)
			os.Exit(4)
		}
		fmt.Fprintf(os.Stdout, "%d\n", i)
	}
}

// TestCrashDurability kills (SIGKILL) a child process writing with
// SyncWrites at several points and checks after each reopen that every
// acknowledged batch is there and no batch is torn.
func TestCrashDurability(t *testing.T) {
	if dir := os.Getenv(envCrashDir); dir != "" {
		start, _ := strconv.ParseUint(os.Getenv(envCrashStart), 10, 64)
		crashChild(dir, start)
		return
	}
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	dir := t.TempDir()
	next := uint64(1)
	for _, acks := range []int{1, 37, 150} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$")
		cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashStart+"="+strconv.FormatUint(next, 10))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var last uint64
		for n := 0; n < acks && sc.Scan(); {
			v, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				continue // test framework chatter
			}
			last, n = v, n+1
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if last == 0 {
			t.Fatalf("child acknowledged nothing (scan error %v)", sc.Err())
		}
		next = checkAfterCrash(t, dir, last)
	}
}

// checkAfterCrash reopens dir, checks batches 1..acked are complete and any
// later batch is complete or absent, and returns the next index to write.
func checkAfterCrash(t *testing.T, dir string, acked uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(store.BadgerOptions(dir), nil)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	latest, err := s.LatestRoundID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest < acked {
		t.Fatalf("acknowledged batch %d lost: latest round on disk is %d", acked, latest)
	}
	for i := uint64(1); i <= latest; i++ {
		if _, err := s.Round(ctx, i); err != nil {
			t.Fatalf("round %d (acked up to %d): %v", i, acked, err)
		}
		ups, err := s.Updates(ctx, i)
		if err != nil || len(ups) != 1 {
			t.Fatalf("torn batch %d: round present, updates %v, %v", i, ups, err)
		}
	}
	mets, err := s.Metrics(ctx, 1)
	if err != nil || uint64(len(mets)) != latest {
		t.Fatalf("metrics: %d records for %d batches, %v", len(mets), latest, err)
	}
	audit, err := s.Audit(ctx, 0, 0)
	if err != nil || uint64(len(audit)) != latest {
		t.Fatalf("audit: %d entries for %d batches, %v", len(audit), latest, err)
	}
	if _, err := s.Round(ctx, latest+1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("round %d beyond the latest: %v", latest+1, err)
	}
	return latest + 1
}
