package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Float16Codec sends IEEE 754 binary16 values (2 bytes per parameter),
// rounded to nearest, ties to even. Values whose magnitude rounds above
// 65504 are rejected rather than sent as infinity. The error per element is
// at most half a binary16 ulp: 2^-11 relative for normal values, 2^-25
// absolute below 2^-14.
type Float16Codec struct{}

// ID implements Encoder.
func (Float16Codec) ID() ID { return Float16 }

// EncodedSize implements Encoder.
func (Float16Codec) EncodedSize(dim int) int { return HeaderSize + 2*dim }

// Encode implements Encoder.
func (Float16Codec) Encode(dst []byte, delta []float32) ([]byte, error) {
	if err := checkEncodeInput(delta); err != nil {
		return dst, fmt.Errorf("encode float16: %w", err)
	}
	start := len(dst)
	dst = appendHeader(dst, Float16, len(delta))
	dst, body := grow(dst, 2*len(delta))
	for i, x := range delta {
		h := F32ToF16(x)
		if h&0x7c00 == 0x7c00 {
			return dst[:start], fmt.Errorf("encode float16: %w: %v at index %d exceeds 65504", ErrRange, x, i)
		}
		binary.LittleEndian.PutUint16(body[2*i:], h)
	}
	return dst, nil
}

// DecodeFloat16 decodes a Float16 encoding into dst.
func DecodeFloat16(dst []float32, src []byte) error {
	body, err := readHeader(src, Float16, len(dst))
	if err != nil {
		return fmt.Errorf("decode float16: %w", err)
	}
	if len(body) != 2*len(dst) {
		return fmt.Errorf("decode float16: %w: body %d bytes, want %d", ErrLength, len(body), 2*len(dst))
	}
	for i := range dst {
		h := binary.LittleEndian.Uint16(body[2*i:])
		if h&0x7c00 == 0x7c00 {
			return fmt.Errorf("decode float16: %w at index %d", ErrNonFinite, i)
		}
		dst[i] = F16ToF32(h)
	}
	return nil
}

// F32ToF16 converts to binary16 with round to nearest, ties to even.
// Overflow gives ±Inf and NaN stays NaN.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): shift the full significand.
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rem := m & (1<<shift - 1)
		r := m >> shift
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: correct rounding
	}
	return sign | uint16(r)
}

// F16ToF32 converts binary16 to float32 exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}
