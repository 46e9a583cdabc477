package codec

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func mustInt8(t testing.TB, block int, seed uint64) *Int8Codec {
	c, err := NewInt8(block, rand.New(rand.NewPCG(seed, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustTopK(t testing.TB, k int, ef bool) *TopKCodec {
	c, err := NewTopK(k, ef)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every encoder's output has exactly its reported size and decodes through
// both the specific decoder and the dispatcher.
func TestEncodedSizeAndDispatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, dim := range []int{0, 1, 7, 64, 1000} {
		v := randVec(r, dim, 1)
		for _, enc := range []Encoder{Float32Codec{}, Float16Codec{}, mustInt8(t, 64, 1), mustTopK(t, 10, true)} {
			b, err := enc.Encode([]byte{0xaa}, v) // appends after existing bytes
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != 0xaa || len(b)-1 != enc.EncodedSize(dim) {
				t.Fatalf("%v dim %d: %d bytes, EncodedSize %d", enc.ID(), dim, len(b)-1, enc.EncodedSize(dim))
			}
			dst := make([]float32, dim)
			id, err := Decode(dst, b[1:])
			if err != nil || id != enc.ID() {
				t.Fatalf("%v dim %d: decode %v %v", enc.ID(), dim, id, err)
			}
		}
	}
}

func TestFloat32RoundTripExact(t *testing.T) {
	v := []float32{0, float32(math.Copysign(0, -1)), 1.5, -3e38, math.SmallestNonzeroFloat32}
	b, _ := Float32Codec{}.Encode(nil, v)
	got := make([]float32, len(v))
	if err := DecodeFloat32(got, b); err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if math.Float32bits(got[i]) != math.Float32bits(v[i]) {
			t.Fatalf("index %d: %v != %v", i, got[i], v[i])
		}
	}
}

// Every finite half decodes and re-encodes to itself; every float32 rounds
// to the nearest half (ties to even), checked against neighbours in float64.
func TestFloat16Conversion(t *testing.T) {
	for h := range 1 << 16 {
		if uint16(h)&0x7c00 == 0x7c00 {
			continue
		}
		if back := F32ToF16(F16ToF32(uint16(h))); back != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, F16ToF32(uint16(h)), back)
		}
	}
	r := rand.New(rand.NewPCG(2, 2))
	check := func(x float32) {
		h := F32ToF16(x)
		if h&0x7c00 == 0x7c00 {
			if math.Abs(float64(x)) < 65520 { // 65520 is the rounding boundary to Inf
				t.Fatalf("%v overflowed", x)
			}
			return
		}
		got := float64(F16ToF32(h))
		err := math.Abs(float64(x) - got)
		for _, nb := range []uint16{h + 1, h - 1} {
			if nb&0x7c00 == 0x7c00 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			alt := math.Abs(float64(x) - float64(F16ToF32(nb)))
			if alt < err || (alt == err && h&1 == 1 && F16ToF32(nb) != F16ToF32(h)) {
				t.Fatalf("%v -> %v (err %g), neighbour %v is closer or the even tie (err %g)", x, got, err, F16ToF32(nb), alt)
			}
		}
	}
	for range 200000 {
		check(math.Float32frombits(r.Uint32() & 0x47ffffff)) // up to ~131072 in magnitude
		check(float32(r.NormFloat64() * 1e-5))
	}
	for _, x := range []float32{65504, 65519.99, 65520, -65520, 1 + 1.0/2048, 1 + 3.0/2048, 0x1p-24, 0x1p-25, 0x1.8p-25} {
		check(x)
	}
	if _, err := (Float16Codec{}).Encode(nil, []float32{1, 70000}); !errors.Is(err, ErrRange) {
		t.Fatalf("70000 in float16: %v", err)
	}
}

// Int8: |x - dec(enc(x))| <= scale_block for every element (scale =
// max|x|/127 of its block), plus half a float32 ulp of the result.
func TestInt8ErrorBound(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, block := range []int{1, 7, 64, 256} {
		enc := mustInt8(t, block, uint64(block))
		for trial := range 20 {
			v := randVec(r, 1+r.IntN(2000), math.Pow(10, float64(trial%9-4)))
			if trial == 19 {
				v = randVec(r, 300, 1e-43) // subnormal blocks
			}
			if trial%5 == 0 {
				v[0] = 0
				for i := range min(block, len(v)) {
					v[i] = 0 // an all-zero block
				}
			}
			b, err := enc.Encode(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(v))
			if err := DecodeInt8(got, b); err != nil {
				t.Fatal(err)
			}
			for lo := 0; lo < len(v); lo += block {
				hi := min(lo+block, len(v))
				var m float64
				for _, x := range v[lo:hi] {
					m = math.Max(m, math.Abs(float64(x)))
				}
				scale := float64(int8Scale(float32(m)))
				if scale < m/127 || scale > m/127*(1+0x1p-23)+0x1p-149 {
					t.Fatalf("scale %g for max %g", scale, m)
				}
				for i := lo; i < hi; i++ {
					bound := scale + math.Abs(float64(got[i]))*0x1p-24
					if e := math.Abs(float64(v[i]) - float64(got[i])); e > bound {
						t.Fatalf("block %d index %d: |%v - %v| = %g > scale %g", block, i, v[i], got[i], e, scale)
					}
				}
			}
		}
	}
}

// Int8 stochastic rounding is unbiased: the mean of many decodes converges
// to x within 5 standard errors (per-draw error is at most scale).
func TestInt8Unbiased(t *testing.T) {
	v := []float32{0.3, -0.71, 0.05, 1, -0.999, 0.5, 0.123456, -0.0001}
	const draws = 20000
	enc := mustInt8(t, len(v), 42)
	sum := make([]float64, len(v))
	got := make([]float32, len(v))
	for range draws {
		b, _ := enc.Encode(nil, v)
		if err := DecodeInt8(got, b); err != nil {
			t.Fatal(err)
		}
		for i, x := range got {
			sum[i] += float64(x)
		}
	}
	scale := 1.0 / 127
	se := scale / 2 / math.Sqrt(draws) // Bernoulli std <= scale/2
	for i, x := range v {
		mean := sum[i] / draws
		if math.Abs(mean-float64(x)) > 5*se+1e-7 {
			t.Fatalf("index %d: mean %v, x %v (tolerance %g)", i, mean, x, 5*se)
		}
	}
}

func TestInt8Deterministic(t *testing.T) {
	v := randVec(rand.New(rand.NewPCG(4, 4)), 500, 1)
	a, _ := mustInt8(t, 32, 7).Encode(nil, v)
	b, _ := mustInt8(t, 32, 7).Encode(nil, v)
	c, _ := mustInt8(t, 32, 8).Encode(nil, v)
	if string(a) != string(b) || string(a) == string(c) {
		t.Fatal("same seed must give the same encoding, different seeds different ones")
	}
}

// Top-k with error feedback: decode(encode(d)) + residual_after ==
// d + residual_before exactly, and over many rounds the sum of what was
// sent plus the final residual is the sum of all deltas.
func TestTopKErrorFeedback(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	const dim = 300
	enc := mustTopK(t, 17, true)
	sent := make([]float64, dim)
	total := make([]float64, dim)
	prevRes := make([]float32, dim)
	got := make([]float32, dim)
	for round := range 50 {
		d := randVec(r, dim, 1)
		b, err := enc.Encode(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodeTopK(got, b); err != nil {
			t.Fatal(err)
		}
		nonzero := 0
		for i := range d {
			if got[i] != 0 {
				nonzero++
			}
			if got[i]+enc.Residual()[i] != d[i]+prevRes[i] {
				t.Fatalf("round %d index %d: sent %v + residual %v != delta %v + old residual %v", round, i, got[i], enc.Residual()[i], d[i], prevRes[i])
			}
			if got[i] != 0 && enc.Residual()[i] != 0 {
				t.Fatalf("round %d index %d sent and kept", round, i)
			}
			sent[i] += float64(got[i])
			total[i] += float64(d[i])
		}
		if nonzero != 17 {
			t.Fatalf("round %d: %d coordinates sent", round, nonzero)
		}
		copy(prevRes, enc.Residual())
	}
	for i := range total {
		if e := math.Abs(sent[i] + float64(enc.Residual()[i]) - total[i]); e > 1e-4 {
			t.Fatalf("index %d: sent+residual %v, total %v", i, sent[i]+float64(enc.Residual()[i]), total[i])
		}
	}
	// Without error feedback nothing is remembered and the k largest go out.
	plain := mustTopK(t, 2, false)
	b, _ := plain.Encode(nil, []float32{0.1, -5, 3, 0.2, 3})
	if err := DecodeTopK(got[:5], b); err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, -5, 3, 0, 0}; !equal(got[:5], want) || plain.Residual() != nil {
		t.Fatalf("top-2 of ties: got %v want %v", got[:5], want)
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestKthLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for range 300 {
		n := 1 + r.IntN(100)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.IntN(10)) // many ties
		}
		k := 1 + r.IntN(n)
		cp := append([]float32(nil), v...)
		got := kthLargest(cp, k)
		above, atLeast := 0, 0
		for _, x := range v {
			if x > got {
				above++
			}
			if x >= got {
				atLeast++
			}
		}
		if above >= k || atLeast < k {
			t.Fatalf("%v k=%d: got %v", v, k, got)
		}
	}
}

func TestNegotiate(t *testing.T) {
	cases := []struct {
		pref, sup []ID
		want      ID
		err       bool
	}{
		{[]ID{Int8, Float16, Float32}, []ID{Float32, Float16}, Float16, false},
		{[]ID{TopK}, []ID{TopK, Int8}, TopK, false},
		{[]ID{Int8}, []ID{Float32}, 0, true},
		{[]ID{0, 99, Float32}, []ID{0, 99, Float32}, Float32, false},
	}
	for _, tc := range cases {
		got, err := Negotiate(tc.pref, tc.sup)
		if got != tc.want || (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrNegotiate)) {
			t.Fatalf("Negotiate(%v, %v) = %v, %v", tc.pref, tc.sup, got, err)
		}
	}
	if Float16.String() != "float16" || ID(9).String() != "codec(9)" {
		t.Fatal("names")
	}
}

func TestEncodersRejectNonFinite(t *testing.T) {
	for _, enc := range []Encoder{Float32Codec{}, Float16Codec{}, mustInt8(t, 4, 1), mustTopK(t, 1, true)} {
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
			if _, err := enc.Encode(nil, []float32{1, bad}); !errors.Is(err, ErrNonFinite) {
				t.Fatalf("%v: %v", enc.ID(), err)
			}
		}
	}
	tk := mustTopK(t, 1, true)
	_, _ = tk.Encode(nil, []float32{1, 2})
	if _, err := tk.Encode(nil, []float32{1, 2, 3}); !errors.Is(err, ErrLength) {
		t.Fatalf("residual length change: %v", err)
	}
	tk.ResetResidual()
	if _, err := tk.Encode(nil, []float32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewInt8(0, rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	if _, err := NewInt8(8, nil); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	if _, err := NewTopK(0, false); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
}

// wireCase is one encoding and the dimension the decoder expects.
type wireCase struct {
	name string
	dim  int
	data []byte
	want error // nil for good encodings
}

func hdr(id ID, dim uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{byte(id), Version}, dim)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func u32(vs ...uint32) []byte {
	var out []byte
	for _, v := range vs {
		out = binary.LittleEndian.AppendUint32(out, v)
	}
	return out
}

func f32s(vs ...float32) []byte {
	var out []byte
	for _, v := range vs {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
	}
	return out
}

// wireCases is the shared table of good and bad encodings: decoder tests
// and fuzz seeds both use it.
func wireCases() []wireCase {
	nan := uint32(0x7fc00000)
	inf := uint32(0x7f800000)
	good32, _ := Float32Codec{}.Encode(nil, []float32{1, -2, 3})
	good16, _ := Float16Codec{}.Encode(nil, []float32{1, -2, 3})
	i8, _ := NewInt8(2, rand.New(rand.NewPCG(1, 2)))
	good8, _ := i8.Encode(nil, []float32{1, -2, 3})
	tk, _ := NewTopK(2, false)
	goodK, _ := tk.Encode(nil, []float32{1, -2, 3})
	return []wireCase{
		{"float32/good", 3, good32, nil},
		{"float16/good", 3, good16, nil},
		{"int8/good", 3, good8, nil},
		{"topk/good", 3, goodK, nil},
		{"topk/good-empty", 3, cat(hdr(TopK, 3), u32(0)), nil},
		{"empty", 3, nil, ErrHeader},
		{"short-header", 3, []byte{byte(Float32), Version, 3}, ErrHeader},
		{"unknown-codec", 3, cat(hdr(9, 3), f32s(1, 2, 3)), ErrHeader},
		{"bad-version", 3, cat([]byte{byte(Float32), 7}, u32(3), f32s(1, 2, 3)), ErrHeader},
		{"float32/dim-mismatch", 3, cat(hdr(Float32, 4), f32s(1, 2, 3, 4)), ErrLength},
		{"float32/huge-dim", 3, cat(hdr(Float32, 0xffffffff)), ErrLength},
		{"float32/truncated", 3, good32[:len(good32)-1], ErrLength},
		{"float32/trailing", 3, append(append([]byte(nil), good32...), 0), ErrLength},
		{"float32/nan", 3, cat(hdr(Float32, 3), f32s(1), u32(nan), f32s(3)), ErrNonFinite},
		{"float32/inf", 3, cat(hdr(Float32, 3), f32s(1, 2), u32(inf)), ErrNonFinite},
		{"float16/truncated", 3, good16[:len(good16)-1], ErrLength},
		{"float16/inf", 3, cat(hdr(Float16, 3), []byte{0, 0x3c, 0, 0x7c, 0, 0x3c}), ErrNonFinite},
		{"float16/nan", 3, cat(hdr(Float16, 3), []byte{0, 0x3c, 1, 0x7e, 0, 0x3c}), ErrNonFinite},
		{"int8/no-block-size", 3, hdr(Int8, 3), ErrLength},
		{"int8/zero-block", 3, cat(hdr(Int8, 3), u32(0), f32s(1), []byte{1, 2, 3}), ErrLength},
		{"int8/huge-block", 3, cat(hdr(Int8, 3), u32(1<<30), f32s(1), []byte{1, 2, 3}), ErrLength},
		{"int8/missing-scale", 3, cat(hdr(Int8, 3), u32(2), f32s(1), []byte{1, 2, 3}), ErrLength},
		{"int8/trailing", 3, append(append([]byte(nil), good8...), 0), ErrLength},
		{"int8/nan-scale", 3, cat(hdr(Int8, 3), u32(3), u32(nan), []byte{1, 2, 3}), ErrRange},
		{"int8/negative-scale", 3, cat(hdr(Int8, 3), u32(3), f32s(-1), []byte{1, 2, 3}), ErrRange},
		{"int8/minus-128", 3, cat(hdr(Int8, 3), u32(3), f32s(1), []byte{1, 0x80, 3}), ErrRange},
		{"int8/overflow", 3, cat(hdr(Int8, 3), u32(3), f32s(3e38), []byte{1, 127, 3}), ErrNonFinite},
		{"topk/no-count", 3, hdr(TopK, 3), ErrLength},
		{"topk/k-above-dim", 3, cat(hdr(TopK, 3), u32(4), u32(0, 1, 2, 3), f32s(1, 1, 1, 1)), ErrLength},
		{"topk/truncated", 3, goodK[:len(goodK)-1], ErrLength},
		{"topk/index-out-of-range", 3, cat(hdr(TopK, 3), u32(1), u32(3), f32s(1)), ErrIndex},
		{"topk/unsorted", 3, cat(hdr(TopK, 3), u32(2), u32(2, 1), f32s(1, 1)), ErrIndex},
		{"topk/duplicate", 3, cat(hdr(TopK, 3), u32(2), u32(1, 1), f32s(1, 1)), ErrIndex},
		{"topk/nan", 3, cat(hdr(TopK, 3), u32(1), u32(0), u32(nan)), ErrNonFinite},
		{"topk/huge-k", 3, cat(hdr(TopK, 3), u32(0xffffffff)), ErrLength},
	}
}

func TestDecodersOnWireTable(t *testing.T) {
	for _, tc := range wireCases() {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]float32, tc.dim)
			_, err := Decode(dst, tc.data)
			if tc.want == nil && err != nil {
				t.Fatalf("good encoding rejected: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSpec(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	good := []Spec{{}, {ID: Float32}, {ID: Float16}, {ID: Int8, BlockSize: 64}, {ID: TopK, K: 10, ErrorFeedback: true}}
	for _, s := range good {
		enc, err := NewEncoder(s, rng)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		if want := max(s.ID, Float32); enc.ID() != want {
			t.Fatalf("%+v built %v", s, enc.ID())
		}
	}
	bad := []Spec{{ID: 9}, {ID: Int8}, {ID: Int8, BlockSize: MaxInt8Block + 1}, {ID: TopK}, {ID: TopK, K: -1}}
	for _, s := range bad {
		if _, err := NewEncoder(s, rng); !errors.Is(err, ErrConfig) {
			t.Fatalf("%+v: %v", s, err)
		}
	}
	if _, err := NewEncoder(Spec{ID: Int8, BlockSize: 8}, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("int8 without rng: %v", err)
	}
}
