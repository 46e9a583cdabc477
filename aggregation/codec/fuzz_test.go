package codec

import (
	"bytes"
	"math"
	"testing"
)

func seedWire(f *testing.F) {
	for _, tc := range wireCases() {
		f.Add(uint16(tc.dim), tc.data)
	}
}

// checkDecoded asserts what every successful decode promises.
func checkDecoded(t *testing.T, dst []float32) {
	for i, x := range dst {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("decoded non-finite %v at %d", x, i)
		}
	}
}

func FuzzDecode(f *testing.F) {
	seedWire(f)
	f.Fuzz(func(t *testing.T, dim uint16, data []byte) {
		dst := make([]float32, dim)
		if _, err := Decode(dst, data); err == nil {
			checkDecoded(t, dst)
		}
	})
}

func FuzzDecodeFloat32(f *testing.F) {
	seedWire(f)
	f.Fuzz(func(t *testing.T, dim uint16, data []byte) {
		dst := make([]float32, dim)
		if err := DecodeFloat32(dst, data); err != nil {
			return
		}
		checkDecoded(t, dst)
		again, err := Float32Codec{}.Encode(nil, dst)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("float32 re-encode differs: %v", err)
		}
	})
}

func FuzzDecodeFloat16(f *testing.F) {
	seedWire(f)
	f.Fuzz(func(t *testing.T, dim uint16, data []byte) {
		dst := make([]float32, dim)
		if err := DecodeFloat16(dst, data); err != nil {
			return
		}
		checkDecoded(t, dst)
		again, err := Float16Codec{}.Encode(nil, dst)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("float16 re-encode differs: %v", err)
		}
	})
}

func FuzzDecodeInt8(f *testing.F) {
	seedWire(f)
	f.Fuzz(func(t *testing.T, dim uint16, data []byte) {
		dst := make([]float32, dim)
		if err := DecodeInt8(dst, data); err != nil {
			return
		}
		checkDecoded(t, dst)
		if len(data) != (&Int8Codec{blockSize: int(le32(data[HeaderSize:]))}).EncodedSize(int(dim)) {
			t.Fatalf("accepted %d bytes, size formula disagrees", len(data))
		}
	})
}

func FuzzDecodeTopK(f *testing.F) {
	seedWire(f)
	f.Fuzz(func(t *testing.T, dim uint16, data []byte) {
		dst := make([]float32, dim)
		if err := DecodeTopK(dst, data); err != nil {
			return
		}
		checkDecoded(t, dst)
		k := int(le32(data[HeaderSize:]))
		nonzero := 0
		for _, x := range dst {
			if x != 0 {
				nonzero++
			}
		}
		if nonzero > k {
			t.Fatalf("%d nonzero coordinates from k=%d", nonzero, k)
		}
		if len(data) != (&TopKCodec{k: max(k, 1)}).EncodedSize(int(dim)) && k > 0 {
			t.Fatalf("accepted %d bytes for k=%d", len(data), k)
		}
	})
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
