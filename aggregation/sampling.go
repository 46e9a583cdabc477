package aggregation

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Sampling chooses the clients of a round: a Fraction of the available
// ones (0 means all), at least MinClients, drawn deterministically from
// Seed and the round number so a simulation replays exactly.
type Sampling struct {
	Fraction   float64
	MinClients int
	Seed       uint64
}

func (s Sampling) validate() error {
	if math.IsNaN(s.Fraction) || s.Fraction < 0 || s.Fraction > 1 {
		return fmt.Errorf("%w: sampling fraction %v not in [0, 1]", ErrConfig, s.Fraction)
	}
	if s.MinClients < 0 {
		return fmt.Errorf("%w: minimum clients %d", ErrConfig, s.MinClients)
	}
	return nil
}

// Select returns the sampled clients, sorted. Duplicate or empty client
// ids among the available ones are an error.
func (s Sampling) Select(round uint64, available []string) ([]string, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	pool := slices.Clone(available)
	slices.Sort(pool)
	for i, c := range pool {
		if c == "" {
			return nil, fmt.Errorf("%w: empty client id", ErrConfig)
		}
		if i > 0 && pool[i-1] == c {
			return nil, clientErr(c, fmt.Errorf("%w: listed twice as available", ErrDuplicate))
		}
	}
	need := max(1, s.MinClients)
	if len(pool) < need {
		return nil, fmt.Errorf("%w: %d available, need at least %d", ErrTooFewClients, len(pool), need)
	}
	n := len(pool)
	if s.Fraction > 0 {
		// The epsilon keeps 0.07·100 = 7.000000000000001 from becoming 8.
		n = max(need, min(len(pool), int(math.Ceil(s.Fraction*float64(len(pool))-1e-9))))
	}
	if n < len(pool) {
		r := rand.New(rand.NewPCG(s.Seed, round))
		r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
		pool = pool[:n]
		slices.Sort(pool)
	}
	return pool, nil
}
