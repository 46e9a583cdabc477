// Package partition splits a labelled dataset among simulated clients the
// ways federated learning papers do: IID, Dirichlet label skew, the FedAvg
// paper's pathological shards, and quantity skew. Every partitioner is
// deterministic for a given seed and returns, for each client, indices into
// the dataset; no index is given to two clients.
package partition

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrInvalid is wrapped by every error about impossible parameters.
var ErrInvalid = errors.New("invalid partition")

// IID shuffles the dataset and deals it into clients parts whose sizes
// differ by at most one.
func IID(n, clients int, seed uint64) ([][]int, error) {
	if err := check(n, clients); err != nil {
		return nil, err
	}
	perm := newRand(seed).Perm(n)
	out := make([][]int, clients)
	for c := range out {
		lo, hi := c*n/clients, (c+1)*n/clients
		out[c] = sortedCopy(perm[lo:hi])
	}
	return out, nil
}

// Shards is the pathological non-IID split of McMahan et al. 2017: sort the
// dataset by label, cut it into shards of equal size and give every client
// shardsPerClient shards at random (the paper: 200 shards of 300, 2 each, for
// 100 clients on MNIST's 60,000 training images). Samples that do not fill a
// whole shard are left out.
func Shards(labels []int, clients, shardsPerClient int, seed uint64) ([][]int, error) {
	if err := check(len(labels), clients); err != nil {
		return nil, err
	}
	if shardsPerClient < 1 {
		return nil, fmt.Errorf("%w: shards per client %d must be at least 1", ErrInvalid, shardsPerClient)
	}
	nShards := clients * shardsPerClient
	size := len(labels) / nShards
	if size < 1 {
		return nil, fmt.Errorf("%w: %d samples cannot make %d shards", ErrInvalid, len(labels), nShards)
	}
	byLabel := make([]int, len(labels))
	for i := range byLabel {
		byLabel[i] = i
	}
	// Stable sort by label keeps the split reproducible.
	slices.SortStableFunc(byLabel, func(a, b int) int { return labels[a] - labels[b] })
	order := newRand(seed).Perm(nShards)
	out := make([][]int, clients)
	for c := range out {
		var idx []int
		for s := 0; s < shardsPerClient; s++ {
			sh := order[c*shardsPerClient+s]
			idx = append(idx, byLabel[sh*size:(sh+1)*size]...)
		}
		out[c] = sortedCopy(idx)
	}
	return out, nil
}

// Dirichlet gives each class's samples to clients in proportions drawn from
// Dirichlet(alpha): small alpha (0.1) means each client sees few classes,
// large alpha approaches IID. Draws are repeated (up to 100 times) until
// every client has at least minPerClient samples.
func Dirichlet(labels []int, classes, clients int, alpha float64, minPerClient int, seed uint64) ([][]int, error) {
	if err := check(len(labels), clients); err != nil {
		return nil, err
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("%w: alpha %v must be positive and finite", ErrInvalid, alpha)
	}
	if minPerClient < 0 || minPerClient*clients > len(labels) {
		return nil, fmt.Errorf("%w: %d clients cannot each get %d of %d samples", ErrInvalid, clients, minPerClient, len(labels))
	}
	byClass, err := groupByClass(labels, classes)
	if err != nil {
		return nil, err
	}
	r := newRand(seed)
	for attempt := 0; attempt < 100; attempt++ {
		out := make([][]int, clients)
		for _, idx := range byClass {
			perm := slices.Clone(idx)
			r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			p := sampleDirichlet(r, alpha, clients)
			cuts := proportionCuts(p, len(perm))
			for c := 0; c < clients; c++ {
				out[c] = append(out[c], perm[cuts[c]:cuts[c+1]]...)
			}
		}
		ok := true
		for _, part := range out {
			if len(part) < minPerClient {
				ok = false
				break
			}
		}
		if ok {
			for c := range out {
				out[c] = sortedCopy(out[c])
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: no Dirichlet(%v) draw in 100 gave every one of %d clients %d samples; lower min_per_client or raise alpha", ErrInvalid, alpha, clients, minPerClient)
}

// QuantitySkew shuffles the dataset (labels stay IID) and gives clients
// sizes in proportions drawn from Dirichlet(alpha), each at least
// minPerClient.
func QuantitySkew(n, clients int, alpha float64, minPerClient int, seed uint64) ([][]int, error) {
	if err := check(n, clients); err != nil {
		return nil, err
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("%w: alpha %v must be positive and finite", ErrInvalid, alpha)
	}
	if minPerClient < 0 || minPerClient*clients > n {
		return nil, fmt.Errorf("%w: %d clients cannot each get %d of %d samples", ErrInvalid, clients, minPerClient, n)
	}
	r := newRand(seed)
	perm := r.Perm(n)
	p := sampleDirichlet(r, alpha, clients)
	// Reserve the minimum, then share the rest by p.
	rest := n - minPerClient*clients
	cuts := proportionCuts(p, rest)
	out := make([][]int, clients)
	pos := 0
	for c := range out {
		size := minPerClient + cuts[c+1] - cuts[c]
		out[c] = sortedCopy(perm[pos : pos+size])
		pos += size
	}
	return out, nil
}

func check(n, clients int) error {
	if clients < 1 {
		return fmt.Errorf("%w: %d clients", ErrInvalid, clients)
	}
	if n < clients {
		return fmt.Errorf("%w: %d samples for %d clients", ErrInvalid, n, clients)
	}
	return nil
}

func groupByClass(labels []int, classes int) ([][]int, error) {
	if classes < 1 {
		return nil, fmt.Errorf("%w: %d classes", ErrInvalid, classes)
	}
	by := make([][]int, classes)
	for i, l := range labels {
		if l < 0 || l >= classes {
			return nil, fmt.Errorf("%w: label %d of sample %d outside [0,%d)", ErrInvalid, l, i, classes)
		}
		by[l] = append(by[l], i)
	}
	return by, nil
}

// proportionCuts turns proportions p (summing to 1) into len(p)+1 cut points
// over n items, largest-remainder rounded so they sum exactly to n.
func proportionCuts(p []float64, n int) []int {
	sizes := make([]int, len(p))
	type rem struct {
		frac float64
		i    int
	}
	rems := make([]rem, len(p))
	total := 0
	for i, pi := range p {
		exact := pi * float64(n)
		sizes[i] = int(math.Floor(exact))
		total += sizes[i]
		rems[i] = rem{exact - float64(sizes[i]), i}
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.frac > b.frac:
			return -1
		case a.frac < b.frac:
			return 1
		}
		return a.i - b.i
	})
	for k := 0; total < n; k++ {
		sizes[rems[k%len(rems)].i]++
		total++
	}
	cuts := make([]int, len(p)+1)
	for i, s := range sizes {
		cuts[i+1] = cuts[i] + s
	}
	return cuts
}

// sampleDirichlet draws from a symmetric Dirichlet(alpha) of dimension k by
// normalising k Gamma(alpha, 1) draws.
func sampleDirichlet(r *rand.Rand, alpha float64, k int) []float64 {
	p := make([]float64, k)
	var sum float64
	for i := range p {
		p[i] = sampleGamma(r, alpha)
		sum += p[i]
	}
	if sum == 0 { // every draw underflowed: put all mass on one client
		p[r.IntN(k)] = 1
		return p
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// sampleGamma draws from Gamma(shape, 1) with Marsaglia and Tsang's method
// (2000), boosting shapes below one with the U^(1/shape) trick.
func sampleGamma(r *rand.Rand, shape float64) float64 {
	if shape < 1 {
		u := r.Float64()
		return sampleGamma(r, shape+1) * math.Pow(u, 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func sortedCopy(s []int) []int {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
