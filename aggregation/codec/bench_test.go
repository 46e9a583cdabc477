package codec

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkCodec encodes and decodes a 1M-parameter delta with each codec.
// MB/s counts raw float32 input bytes (4 per parameter) so codecs compare
// directly; float32 is the baseline (a bounds-checked copy).
// bytes/param is the encoded size over the parameter count.
func BenchmarkCodec(b *testing.B) {
	const dim = 1_000_000
	delta := randVec(rand.New(rand.NewPCG(1, 2)), dim, 0.01)
	codecs := []struct {
		name string
		enc  func() Encoder
	}{
		{"float32", func() Encoder { return Float32Codec{} }},
		{"float16", func() Encoder { return Float16Codec{} }},
		{"int8-block256", func() Encoder { return mustInt8(b, 256, 1) }},
		{"topk-1pct-ef", func() Encoder { return mustTopK(b, dim/100, true) }},
	}
	for _, c := range codecs {
		b.Run(c.name, func(b *testing.B) {
			enc := c.enc()
			buf := make([]byte, 0, enc.EncodedSize(dim))
			dst := make([]float32, dim)
			var encT, decT time.Duration
			for b.Loop() {
				t0 := time.Now()
				out, err := enc.Encode(buf[:0], delta)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := Decode(dst, out); err != nil {
					b.Fatal(err)
				}
				encT += t1.Sub(t0)
				decT += time.Since(t1)
				buf = out
			}
			mb := float64(4*dim) * float64(b.N) / 1e6
			b.ReportMetric(mb/encT.Seconds(), "encode-MB/s")
			b.ReportMetric(mb/decT.Seconds(), "decode-MB/s")
			b.ReportMetric(float64(enc.EncodedSize(dim))/dim, "bytes/param")
		})
	}
}
