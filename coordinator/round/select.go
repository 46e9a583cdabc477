package round

import (
	"bytes"
	"math"
	"slices"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// eligible lists, by id, the online devices matching every tag of the
// run's filter and reporting every feature it requires.
func eligible(online map[string]*fedgepb.Capabilities, cfg *fedgepb.RunConfig) []string {
	var out []string
	for id, caps := range online {
		if matches(caps, cfg) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func matches(caps *fedgepb.Capabilities, cfg *fedgepb.RunConfig) bool {
	for k, v := range cfg.TagFilter {
		if caps.GetTags()[k] != v {
			return false
		}
	}
	for _, f := range cfg.RequiredFeatures {
		if !slices.Contains(caps.GetFeatures(), f) {
			return false
		}
	}
	return true
}

// selectCount is how many of n eligible devices a round selects: the
// fraction rounded up, at least min, at most max (0: no max) and n. It is 0
// when fewer than min are eligible.
func selectCount(cfg *fedgepb.RunConfig, n int) int {
	if n == 0 || n < int(cfg.MinClients) {
		return 0
	}
	k := int(math.Ceil(cfg.Fraction * float64(n)))
	k = max(k, int(cfg.MinClients), 1)
	if cfg.MaxClients > 0 {
		k = min(k, int(cfg.MaxClients))
	}
	return min(k, n)
}

// choose picks k of the candidates: those of smallest rank under the run's
// seed and the round id, returned sorted by id. The result depends only on
// the set of candidates, never on their order.
func choose(candidates []string, k int, seed, round uint64) []string {
	type ranked struct {
		id   string
		rank []byte
	}
	rs := make([]ranked, len(candidates))
	for i, id := range candidates {
		rs[i] = ranked{id, rank(seed, round, id)}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := bytes.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.id), []byte(b.id))
	})
	out := make([]string, 0, k)
	for _, r := range rs[:k] {
		out = append(out, r.id)
	}
	slices.Sort(out)
	return out
}
