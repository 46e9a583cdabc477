package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Float32Codec sends the delta uncompressed (4 bytes per parameter).
type Float32Codec struct{}

// ID implements Encoder.
func (Float32Codec) ID() ID { return Float32 }

// EncodedSize implements Encoder.
func (Float32Codec) EncodedSize(dim int) int { return HeaderSize + 4*dim }

// Encode implements Encoder.
func (c Float32Codec) Encode(dst []byte, delta []float32) ([]byte, error) {
	if err := checkEncodeInput(delta); err != nil {
		return dst, fmt.Errorf("encode float32: %w", err)
	}
	dst = appendHeader(dst, Float32, len(delta))
	dst, body := grow(dst, 4*len(delta))
	for i, x := range delta {
		binary.LittleEndian.PutUint32(body[4*i:], math.Float32bits(x))
	}
	return dst, nil
}

// DecodeFloat32 decodes a Float32 encoding into dst.
func DecodeFloat32(dst []float32, src []byte) error {
	body, err := readHeader(src, Float32, len(dst))
	if err != nil {
		return fmt.Errorf("decode float32: %w", err)
	}
	if len(body) != 4*len(dst) {
		return fmt.Errorf("decode float32: %w: body %d bytes, want %d", ErrLength, len(body), 4*len(dst))
	}
	for i := range dst {
		x := math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
		if !finite32(x) {
			return fmt.Errorf("decode float32: %w at index %d", ErrNonFinite, i)
		}
		dst[i] = x
	}
	return nil
}
