package partition

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

// mnistLikeLabels returns n labels over 10 classes in equal proportion,
// interleaved so that sorting matters.
func mnistLikeLabels(n int) []int {
	l := make([]int, n)
	for i := range l {
		l[i] = (i * 7) % 10
	}
	return l
}

// checkDisjoint asserts that no index is given twice and all are in range,
// and returns how many were given.
func checkDisjoint(t *testing.T, parts [][]int, n int) int {
	t.Helper()
	seen := make([]bool, n)
	total := 0
	for c, p := range parts {
		for _, i := range p {
			if i < 0 || i >= n {
				t.Fatalf("client %d got index %d outside [0,%d)", c, i, n)
			}
			if seen[i] {
				t.Fatalf("index %d given twice", i)
			}
			seen[i] = true
			total++
		}
	}
	return total
}

func classesOf(labels []int, idx []int) map[int]int {
	m := map[int]int{}
	for _, i := range idx {
		m[labels[i]]++
	}
	return m
}

func TestIIDCoversAllEvenly(t *testing.T) {
	parts, err := IID(1003, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkDisjoint(t, parts, 1003); got != 1003 {
		t.Fatalf("covered %d of 1003", got)
	}
	for c, p := range parts {
		if len(p) < 100 || len(p) > 101 {
			t.Fatalf("client %d has %d samples, want 100 or 101", c, len(p))
		}
	}
}

func TestShardsMatchesPaperSetting(t *testing.T) {
	labels := mnistLikeLabels(60000)
	parts, err := Shards(labels, 100, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkDisjoint(t, parts, len(labels)); got != 60000 {
		t.Fatalf("covered %d of 60000", got)
	}
	for c, p := range parts {
		if len(p) != 600 {
			t.Fatalf("client %d has %d samples, want 600", c, len(p))
		}
		// Two shards of sorted labels span at most 4 classes (a shard can
		// straddle a class boundary), and most clients see at most 2.
		if k := len(classesOf(labels, p)); k > 4 {
			t.Fatalf("client %d sees %d classes, want at most 4", c, k)
		}
	}
}

func TestDirichletSmallAlphaIsSkewed(t *testing.T) {
	labels := mnistLikeLabels(20000)
	skewed, err := Dirichlet(labels, 10, 50, 0.1, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	flat, err := Dirichlet(labels, 10, 50, 1000, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkDisjoint(t, skewed, len(labels)); got != len(labels) {
		t.Fatalf("covered %d of %d", got, len(labels))
	}
	// Mean share of a client's largest class: near 1 for alpha=0.1, near
	// 0.1 for alpha=1000.
	dominance := func(parts [][]int) float64 {
		var s float64
		for _, p := range parts {
			best := 0
			for _, n := range classesOf(labels, p) {
				best = max(best, n)
			}
			s += float64(best) / float64(len(p))
		}
		return s / float64(len(parts))
	}
	ds, df := dominance(skewed), dominance(flat)
	t.Logf("largest-class share: alpha=0.1 %.3f, alpha=1000 %.3f", ds, df)
	if ds < 0.5 || df > 0.2 {
		t.Fatalf("alpha=0.1 dominance %.3f (want >= 0.5), alpha=1000 %.3f (want <= 0.2)", ds, df)
	}
	for c, p := range skewed {
		if len(p) < 10 {
			t.Fatalf("client %d has %d samples, below the minimum 10", c, len(p))
		}
	}
}

func TestQuantitySkewSizesVary(t *testing.T) {
	parts, err := QuantitySkew(10000, 20, 0.5, 5, 9)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkDisjoint(t, parts, 10000); got != 10000 {
		t.Fatalf("covered %d of 10000", got)
	}
	lo, hi := math.MaxInt, 0
	for _, p := range parts {
		lo, hi = min(lo, len(p)), max(hi, len(p))
	}
	if lo < 5 || hi < 3*lo {
		t.Fatalf("sizes from %d to %d: want min >= 5 and a spread of at least 3x", lo, hi)
	}
}

func TestSameSeedSameSplit(t *testing.T) {
	labels := mnistLikeLabels(5000)
	a, _ := Dirichlet(labels, 10, 20, 0.3, 5, 42)
	b, _ := Dirichlet(labels, 10, 20, 0.3, 5, 42)
	c, _ := Dirichlet(labels, 10, 20, 0.3, 5, 43)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different partitions")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds gave the same partition")
	}
}

func TestBadParameters(t *testing.T) {
	labels := mnistLikeLabels(100)
	cases := map[string]error{
		"zero clients":       func() error { _, err := IID(10, 0, 1); return err }(),
		"more clients":       func() error { _, err := IID(3, 4, 1); return err }(),
		"zero shards":        func() error { _, err := Shards(labels, 10, 0, 1); return err }(),
		"too many shards":    func() error { _, err := Shards(labels, 60, 2, 1); return err }(),
		"negative alpha":     func() error { _, err := Dirichlet(labels, 10, 5, -1, 1, 1); return err }(),
		"NaN alpha":          func() error { _, err := Dirichlet(labels, 10, 5, math.NaN(), 1, 1); return err }(),
		"label out of range": func() error { _, err := Dirichlet([]int{0, 1, 12, 3, 4}, 10, 2, 1, 0, 1); return err }(),
		"impossible minimum": func() error { _, err := QuantitySkew(100, 10, 1, 11, 1); return err }(),
	}
	for name, err := range cases {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}
