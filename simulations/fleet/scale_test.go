package fleet

import (
	"slices"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/simulations/scenario"
)

// TestResampledIID: every device gets perClient indices in range, sorted,
// from a stream of its own: the same seed gives the same parts, device i's
// part does not depend on the fleet size, and another seed changes it.
func TestResampledIID(t *testing.T) {
	const n, per = 1000, 6
	small, err := resampledIID(n, 3000, per, 7)
	if err != nil {
		t.Fatal(err)
	}
	large, err := resampledIID(n, 5000, per, 7)
	if err != nil {
		t.Fatal(err)
	}
	other, err := resampledIID(n, 3000, per, 8)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, n)
	differs := 0
	for i, part := range small {
		if len(part) != per || !slices.IsSorted(part) {
			t.Fatalf("device %d: %v", i, part)
		}
		for _, x := range part {
			if x < 0 || x >= n {
				t.Fatalf("device %d: index %d outside [0,%d)", i, x, n)
			}
			seen[x]++
		}
		if !slices.Equal(part, large[i]) {
			t.Fatalf("device %d: %v in a fleet of 3000, %v in one of 5000", i, part, large[i])
		}
		if !slices.Equal(part, other[i]) {
			differs++
		}
	}
	if differs < len(small)*9/10 {
		t.Fatalf("only %d of %d devices changed with the seed", differs, len(small))
	}
	// 18,000 uniform draws over 1,000 samples: each drawn 18 times on
	// average; every sample drawn at least once (the chance of a miss is
	// about 1000 * e^-18, i.e. never).
	for x, c := range seen {
		if c == 0 {
			t.Fatalf("sample %d never drawn", x)
		}
	}
	// Appending to one device's part cannot overwrite the next one's.
	p0 := append(small[0], -1)
	if small[1][0] == -1 || len(p0) != per+1 {
		t.Fatal("parts share capacity")
	}
	for _, bad := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}} {
		if _, err := resampledIID(bad[0], bad[1], bad[2], 1); err == nil {
			t.Fatalf("resampledIID%v accepted", bad)
		}
	}
}

// TestPartitionMoreDevicesThanSamples: an IID scenario whose devices
// cannot each get min_per_client samples of their own resamples; one that
// can still deals the set out without replacement.
func TestPartitionMoreDevicesThanSamples(t *testing.T) {
	x := make([]float32, 60*2)
	y := make([]int, 60)
	for i := range y {
		y[i] = i % 3
	}
	train, err := data.NewDataset(x, y, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	sc := scenario.Default()
	sc.Partition.Kind, sc.Partition.MinPerClient = "iid", 6
	for _, tc := range []struct {
		clients, per int
		disjoint     bool
	}{{10, 6, true}, {11, 6, false}, {100, 6, false}} {
		sc.Clients = tc.clients
		parts, err := partitionData(sc, train)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		used := map[int]bool{}
		for i, p := range parts {
			if len(p) != tc.per {
				t.Fatalf("%d clients: client %d has %d samples, want %d", tc.clients, i, len(p), tc.per)
			}
			for _, s := range p {
				used[s] = true
			}
			total += len(p)
		}
		if disjoint := len(used) == total; disjoint != tc.disjoint {
			t.Fatalf("%d clients: %d distinct of %d samples", tc.clients, len(used), total)
		}
	}
	// Without min_per_client, more clients than samples resample one each.
	sc.Partition.MinPerClient, sc.Clients = 0, 61
	parts, err := partitionData(sc, train)
	if err != nil || len(parts) != 61 || len(parts[60]) != 1 {
		t.Fatalf("61 clients over 60 samples: %d parts, %v", len(parts), err)
	}
}
