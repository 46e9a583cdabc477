package agent

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/edgeagent/data/datatest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// TestClipL2 checks clipping against a float64 reference.
func TestClipL2(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []float64{0, 0.5, 1, 3, 100} {
		v := make([]float32, 1000)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.1)
		}
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		n = math.Sqrt(n)
		want := make([]float64, len(v))
		for i, x := range v {
			want[i] = float64(x)
			if c > 0 && n > c {
				want[i] *= c / n
			}
		}
		ClipL2(v, c)
		for i := range v {
			if math.Abs(float64(v[i])-want[i]) > 1e-6*math.Max(1, math.Abs(want[i])) {
				t.Fatalf("clip %v: v[%d] = %v, want %v", c, i, v[i], want[i])
			}
		}
	}
}

func TestEncodeDeltaCodecs(t *testing.T) {
	delta := make([]float32, 1000)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range delta {
		delta[i] = float32(r.NormFloat64())
	}
	for _, tc := range []struct {
		codec fedgepb.Codec
		tol   float64
		topk  float32
	}{
		{fedgepb.Codec_CODEC_FLOAT32, 0, 0},
		{fedgepb.Codec_CODEC_FLOAT16, 2e-3, 0},
		{fedgepb.Codec_CODEC_INT8, 0.05, 0},
		{fedgepb.Codec_CODEC_TOPK, -1, 0.1},
	} {
		tc2 := &fedgepb.TrainConfig{Codec: tc.codec, Seed: 9, TopkFraction: tc.topk}
		enc, err := encodeDelta(tc2, 1, delta)
		must(t, err)
		again, err := encodeDelta(tc2, 1, delta)
		must(t, err)
		if !bytes.Equal(enc, again) {
			t.Fatalf("%v: encoding not deterministic for the same task", tc.codec)
		}
		got := make([]float32, len(delta))
		id, err := codec.Decode(got, enc)
		must(t, err)
		if int(id) != int(tc.codec) {
			t.Fatalf("%v decoded as %v", tc.codec, id)
		}
		if tc.tol < 0 { // top-k: 100 non-zeros, each exact
			nz := 0
			for i, g := range got {
				if g != 0 {
					nz++
					if g != delta[i] {
						t.Fatalf("topk value %d = %v, want %v", i, g, delta[i])
					}
				}
			}
			if nz != 100 {
				t.Fatalf("topk kept %d values", nz)
			}
			continue
		}
		for i := range got {
			if math.Abs(float64(got[i]-delta[i])) > tc.tol*math.Max(1, math.Abs(float64(delta[i]))) {
				t.Fatalf("%v: value %d = %v, want %v", tc.codec, i, got[i], delta[i])
			}
		}
	}
	if _, err := encodeDelta(&fedgepb.TrainConfig{Codec: fedgepb.Codec_CODEC_SECAGG}, 1, delta); err == nil {
		t.Fatal("secagg codec accepted")
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	w := []float32{0, -1.5, float32(math.Inf(1)), 3e-40}
	got, err := DecodeWeights(EncodeWeights(w))
	must(t, err)
	for i := range w {
		if math.Float32bits(got[i]) != math.Float32bits(w[i]) {
			t.Fatalf("weight %d = %v", i, got[i])
		}
	}
	if _, err := DecodeWeights([]byte{1, 2, 3}); err == nil {
		t.Fatal("3 bytes decoded")
	}
}

func TestDataSpecLoadMNISTPartition(t *testing.T) {
	d, err := ParseDataSpec("mnist:" + datatest.MNISTDir(t) + "?part=3/10")
	must(t, err)
	src, err := d.Load()
	must(t, err)
	if src.Len() != 6000 || src.Dim() != 784 || src.Classes() != 10 {
		t.Fatalf("partition %d x %d, %d classes", src.Len(), src.Dim(), src.Classes())
	}
	full, _ := datatest.MNIST(t)
	for _, k := range []int{0, 1, 2999, 5999} {
		x, y := src.Sample(k)
		fx, fy := full.Sample(10*k + 3)
		if y != fy || !slices.Equal(x, fx) {
			t.Fatalf("partition sample %d is not full sample %d", k, 10*k+3)
		}
	}
}

func TestShuffleSeedDiffersPerRound(t *testing.T) {
	seen := map[uint64]uint64{}
	for round := range uint64(1000) {
		s := shuffleSeed(42, round)
		if prev, ok := seen[s]; ok {
			t.Fatalf("rounds %d and %d shuffle with the same seed", prev, round)
		}
		seen[s] = round
	}
	if shuffleSeed(42, 3) != shuffleSeed(42, 3) || shuffleSeed(42, 3) == shuffleSeed(43, 3) {
		t.Fatal("the shuffle seed must be a function of the run's seed and the round")
	}
}
