package secagg

import (
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	good := testConfig(10, 4, 3, 5)
	cases := []struct {
		name string
		edit func(c *Config)
	}{
		{"one client", func(c *Config) { c.N = 1 }},
		{"odd sparse degree", func(c *Config) { c.Degree = 3 }},
		{"threshold 1", func(c *Config) { c.Threshold = 1 }},
		{"threshold above holders", func(c *Config) { c.Threshold = 6 }},
		{"threshold not a majority", func(c *Config) { c.Degree, c.Threshold = 6, 3 }},
		{"zero dim", func(c *Config) { c.Dim = 0 }},
		{"zero clip", func(c *Config) { c.Clip = 0 }},
		{"NaN clip", func(c *Config) { c.Clip = math.NaN() }},
		{"negative weight", func(c *Config) { c.MaxWeight = -1 }},
		{"negative stage ticks", func(c *Config) { c.StageTicks = -1 }},
		{"missing keys", func(c *Config) { c.DeviceKeys = c.DeviceKeys[:9] }},
		{"short key", func(c *Config) { c.DeviceKeys = slices.Clone(c.DeviceKeys); c.DeviceKeys[2] = c.DeviceKeys[2][:5] }},
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		c := good
		tc.edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tc.name, err)
		}
	}
	if _, err := NewClient(good, 3, deviceKey(4), nil); !errors.Is(err, ErrConfig) {
		t.Errorf("client with another device's key: %v", err)
	}
	if _, err := NewClient(good, 10, deviceKey(10), nil); !errors.Is(err, ErrConfig) {
		t.Errorf("client id out of range: %v", err)
	}
}

// TestNeighbourGraph: the SecAgg+ graph is Degree-regular, symmetric,
// loop-free, deterministic in the round seed, and complete for Degree >= N-1.
func TestNeighbourGraph(t *testing.T) {
	for _, tc := range []struct{ n, deg int }{{5, 4}, {5, 9}, {10, 2}, {100, 22}, {1000, 30}, {7, 6}} {
		t.Run(fmt.Sprintf("n=%d/k=%d", tc.n, tc.deg), func(t *testing.T) {
			cfg := testConfig(tc.n, tc.deg, 2, 1)
			g := cfg.Neighbours()
			want := min(tc.deg, tc.n-1)
			for u, nb := range g {
				if len(nb) != want || !slices.IsSorted(nb) || len(slices.Compact(slices.Clone(nb))) != want {
					t.Fatalf("client %d: neighbours %v, want %d distinct sorted", u, nb, want)
				}
				for _, v := range nb {
					if int(v) == u {
						t.Fatalf("client %d is its own neighbour", u)
					}
					if _, ok := slices.BinarySearch(g[v], uint32(u)); !ok {
						t.Fatalf("edge %d-%d not symmetric", u, v)
					}
				}
				if !slices.Equal(cfg.NeighboursOf(uint32(u)), nb) {
					t.Fatalf("NeighboursOf(%d) differs from Neighbours", u)
				}
			}
			other := cfg
			other.RoundSeed[5] ^= 1
			if tc.deg < tc.n-1 && tc.n > 10 && slices.EqualFunc(g, other.Neighbours(), slices.Equal) {
				t.Fatal("graph does not depend on the round seed")
			}
		})
	}
}

func TestRecommendedDegree(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{2, 1}, {10, 9}, {16, 15}, {17, 16}, {100, 22}, {1000, 30}, {100000, 52}} {
		if got := RecommendedDegree(tc.n); got != tc.want {
			t.Errorf("RecommendedDegree(%d)=%d want %d", tc.n, got, tc.want)
		}
	}
}

// TestQuantizerAgainstFloat64: quantize/dequantize stays within 0.5/Scale
// of the clipped float64 value, and the sum of N extreme inputs cannot
// overflow the int32 reading of Z_{2^32}.
func TestQuantizerAgainstFloat64(t *testing.T) {
	r := mrand.New(mrand.NewPCG(3, 4))
	for _, tc := range []struct {
		clip float64
		n    int
	}{{1, 2}, {0.01, 10}, {5, 1000}, {1, 1 << 20}} {
		q, err := NewQuantizer(tc.clip, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if int64(tc.n)*int64(q.MaxQ) > math.MaxInt32 {
			t.Fatalf("n=%d MaxQ=%d can overflow", tc.n, q.MaxQ)
		}
		for i := 0; i < 10000; i++ {
			v := (r.Float64()*3 - 1.5) * tc.clip
			ref := math.Max(-tc.clip, math.Min(tc.clip, v))
			if d := math.Abs(q.Dequantize(q.Quantize(v)) - ref); d > 0.5/q.Scale+1e-12*tc.clip {
				t.Fatalf("clip %v: %v -> error %g > %g", tc.clip, v, d, 0.5/q.Scale)
			}
		}
		var sum uint32
		for i := 0; i < min(tc.n, 4096); i++ {
			sum += q.Quantize(-2 * tc.clip)
		}
		if want := -float64(min(tc.n, 4096)) * tc.clip; math.Abs(q.Dequantize(sum)-want) > 1e-6*math.Abs(want) {
			t.Fatalf("sum of extremes %v, want %v", q.Dequantize(sum), want)
		}
	}
	if _, err := NewQuantizer(0, 3); !errors.Is(err, ErrConfig) {
		t.Fatal("zero clip accepted")
	}
}

func TestEncodeRejectsBadInput(t *testing.T) {
	cfg := testConfig(4, 3, 3, 2)
	cfg.MaxWeight = 10
	for _, tc := range []struct {
		name string
		x    []float32
		w    float64
	}{
		{"short", []float32{1}, 1},
		{"NaN", []float32{1, float32(math.NaN())}, 1},
		{"Inf", []float32{float32(math.Inf(1)), 0}, 1},
		{"NaN weight", []float32{0, 0}, math.NaN()},
	} {
		if _, err := cfg.Encode(tc.x, tc.w); !errors.Is(err, ErrNoInput) {
			t.Errorf("%s: %v, want ErrNoInput", tc.name, err)
		}
	}
	enc, err := cfg.Encode([]float32{0.5, -3}, 20) // weight clipped to MaxWeight
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.Quantizer()
	if int32(enc[2]) != q.MaxQ || math.Abs(q.Dequantize(enc[0])-0.5) > 0.5/q.Scale || int32(enc[1]) != -q.MaxQ {
		t.Fatalf("encode = %v", enc)
	}
}

// TestServerReceiveRejects: the server refuses messages of the wrong stage,
// round or sender, and duplicates, without changing state. (It does not
// check inner signatures: TestServerRelaysInnerSignaturesUnchecked.)
func TestServerReceiveRejects(t *testing.T) {
	cfg := testConfig(4, 3, 3, 2)
	r := newRound(t, cfg, 30)
	advert, err := r.clients[0].AdvertiseKeys()
	if err != nil {
		t.Fatal(err)
	}
	otherRound := testConfig(4, 3, 3, 2)
	otherRound.Round = 8
	c1, _ := NewClient(otherRound, 1, deviceKey(1), seededRand(1))
	advertRound8, _ := c1.AdvertiseKeys()
	masked := (&MaskedInput{Round: 7, From: 0, Y: []uint32{1, 2}}).Marshal()
	cases := []struct {
		name string
		from uint32
		msg  []byte
		want error
	}{
		{"claims another sender", 2, advert, ErrUnknownClient},
		{"unknown client", 9, advert, ErrUnknownClient},
		{"other round", 1, advertRound8, ErrWrongRound},
		{"wrong stage", 0, masked, ErrWrongStage},
		{"garbage", 0, []byte{1, 2, 3}, ErrMalformed},
	}
	for _, tc := range cases {
		if err := r.server.Receive(tc.from, tc.msg); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := r.server.Receive(0, advert); err != nil {
		t.Fatal(err)
	}
	if err := r.server.Receive(0, advert); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate: %v", err)
	}
	if r.server.Ready() || len(r.server.Pending()) != 3 {
		t.Fatalf("pending %v", r.server.Pending())
	}
	if _, err := r.server.Result(); !errors.Is(err, ErrWrongStage) {
		t.Fatalf("Result before the end: %v", err)
	}
}

// TestEncodeMatchesReference: Encode's branchy clip gives bit for bit the
// result of the straightforward math.Max/Min formulation, on random values
// and on the edge cases (signed zeros, clip boundaries, halves, subnormals,
// huge values), with and without the weight channel.
func TestEncodeMatchesReference(t *testing.T) {
	ref := func(cfg *Config, values []float32, weight float64) []uint32 {
		q := cfg.Quantizer()
		scale := 1.0
		out := make([]uint32, cfg.VectorLen())
		if cfg.MaxWeight > 0 {
			scale = math.Max(0, math.Min(cfg.MaxWeight, weight)) / cfg.MaxWeight
			out[cfg.Dim] = uint32(int32(math.Round(scale * float64(q.MaxQ))))
		}
		for i, v := range values {
			f := math.Max(-q.Clip, math.Min(q.Clip, float64(v)))
			out[i] = uint32(int32(math.Round(f * scale * q.Scale)))
		}
		return out
	}
	edge := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.75, -0.75, math.MaxFloat32, -math.MaxFloat32,
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, math.Nextafter32(1, 2), math.Nextafter32(-1, -2), 0.5, -0.5}
	r := mrand.New(mrand.NewPCG(5, 6))
	for _, tc := range []struct {
		clip, maxWeight, weight float64
		n                       int
	}{{1, 0, 0, 4}, {0.75, 0, 0, 1000}, {3, 10, 4.2, 100}, {1, 10, 25, 7}} {
		cfg := testConfig(tc.n, min(tc.n-1, 4), 3, len(edge)+2000)
		cfg.Clip, cfg.MaxWeight = tc.clip, tc.maxWeight
		x := append([]float32(nil), edge...)
		q := cfg.Quantizer()
		for len(x) < cfg.Dim {
			switch r.IntN(3) {
			case 0: // exact quantization midpoints, where rounding matters
				x = append(x, float32((float64(r.Int32N(1<<20))+0.5)/q.Scale))
			default:
				x = append(x, float32((r.Float64()*3-1.5)*tc.clip))
			}
		}
		got, err := cfg.Encode(x, tc.weight)
		if err != nil {
			t.Fatal(err)
		}
		if want := ref(&cfg, x, tc.weight); !slices.Equal(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("clip %v: Encode(%v)[%d] = %d, reference %d", tc.clip, x[i], i, got[i], want[i])
				}
			}
		}
	}
}
