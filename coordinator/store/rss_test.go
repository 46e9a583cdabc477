package store_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/coordinator/store/storetest"
)

const envRSSChild = "FEDGE_STORE_RSS_CHILD"

// peakRSS is the process's peak resident set size in KiB (Linux).
func peakRSS() (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// rssChild opens a store with the named options, writes 2,000 updates of
// 4 KiB in 200 batches and reads them back, then prints its peak RSS in KiB.
func rssChild(kind, dir string) {
	opts := store.BadgerOptions(dir)
	if kind == "low" {
		opts = store.LowMemoryBadgerOptions(dir)
	}
	s, err := store.Open(opts, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	ctx := context.Background()
	for b := range 200 {
		batch := &store.Batch{}
		for j := range 10 {
			i := b*10 + j
			u := storetest.SampleUpdate(uint64(1+i/100), fmt.Sprintf("dev-%d", i), uint32(i%100))
			u.EncodedDelta = make([]byte, 4096)
			batch.Updates = append(batch.Updates, u)
		}
		if err := s.Apply(ctx, batch); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
	for r := uint64(1); r <= 20; r++ {
		if ups, err := s.Updates(ctx, r); err != nil || len(ups) != 100 {
			fmt.Fprintln(os.Stderr, "read back:", len(ups), err)
			os.Exit(5)
		}
	}
	kb, err := peakRSS()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(6)
	}
	fmt.Println(kb)
	os.Exit(0)
}

// TestLowMemoryFootprint runs the same workload in two child processes and
// checks the low-memory options peak at a lower RSS than the defaults.
func TestLowMemoryFootprint(t *testing.T) {
	if kind := os.Getenv(envRSSChild); kind != "" {
		rssChild(kind, os.Getenv(envCrashDir))
		return
	}
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	rss := map[string]int{}
	for _, kind := range []string{"default", "low"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLowMemoryFootprint$")
		cmd.Env = append(os.Environ(), envRSSChild+"="+kind, envCrashDir+"="+t.TempDir())
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s child: %v", kind, err)
		}
		fields := strings.Fields(string(out))
		if len(fields) == 0 {
			t.Fatalf("%s child printed nothing", kind)
		}
		kb, err := strconv.Atoi(fields[0])
		if err != nil {
			t.Fatalf("%s child output %q: %v", kind, out, err)
		}
		rss[kind] = kb
	}
	t.Logf("peak RSS for 2,000 updates of 4 KiB: default options %d KiB, low-memory options %d KiB", rss["default"], rss["low"])
	if rss["low"] >= rss["default"] {
		t.Errorf("low-memory options peak at %d KiB, not below the defaults' %d KiB", rss["low"], rss["default"])
	}
}
