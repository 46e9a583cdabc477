package aggregation

import "math"

// The two hot loops of streaming FedAvg: a finiteness scan and the widening
// multiply-add sum[i] += w*float64(d[i]). kernel_amd64.s holds AVX2
// versions; these portable ones are the reference they are tested against.

// allFiniteGeneric reports whether v holds no NaN and no ±Inf: a float32
// is non-finite exactly when its exponent bits are all ones.
func allFiniteGeneric(v []float32) bool {
	var bad uint32
	for _, x := range v {
		bad |= (math.Float32bits(x) & 0x7f800000) + 0x00800000
	}
	return bad&0x80000000 == 0
}

// axpyGeneric adds w*float64(d[i]) to s[i]. The explicit float64
// conversion forbids fusing into an FMA, so the result is bit-identical to
// the vector kernel (separate multiply and add, both rounded).
func axpyGeneric(s []float64, d []float32, w float64) {
	s = s[:len(d)]
	i := 0
	for ; i+4 <= len(d); i += 4 {
		dd := d[i : i+4 : i+4]
		ss := s[i : i+4 : i+4]
		ss[0] += float64(w * float64(dd[0]))
		ss[1] += float64(w * float64(dd[1]))
		ss[2] += float64(w * float64(dd[2]))
		ss[3] += float64(w * float64(dd[3]))
	}
	for ; i < len(d); i++ {
		s[i] += float64(w * float64(d[i]))
	}
}
