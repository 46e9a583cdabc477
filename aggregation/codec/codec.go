// Package codec encodes client model deltas for the wire: raw float32,
// IEEE float16, int8 stochastic quantization with per-block scales, and
// top-k sparsification with client-side error feedback.
//
// Every encoding is self-describing: a 6-byte header (codec ID, format
// version, parameter count as little-endian uint32) followed by the codec's
// body. Decoders take the destination slice, whose length is the model
// dimension the caller expects, and validate everything: header, exact
// length, counts, index order and range, NaN/Inf. Encoders report their
// exact encoded size for a dimension. Stochastic encoders draw from an
// explicit random source so simulations replay bit for bit.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// ID names an update encoding; it is negotiated per round.
type ID uint8

// Codec identifiers. The zero ID is deliberately invalid.
const (
	Float32 ID = 1 // raw little-endian float32, 4 bytes/param
	Float16 ID = 2 // IEEE 754 binary16, round to nearest even, 2 bytes/param
	Int8    ID = 3 // stochastic int8 with a float32 scale per block
	TopK    ID = 4 // k (index, float32 value) pairs, sorted by index
)

// String returns the codec's name.
func (id ID) String() string {
	switch id {
	case Float32:
		return "float32"
	case Float16:
		return "float16"
	case Int8:
		return "int8"
	case TopK:
		return "topk"
	}
	return fmt.Sprintf("codec(%d)", uint8(id))
}

// Valid reports whether id names a known codec.
func (id ID) Valid() bool { return id >= Float32 && id <= TopK }

// Version is the body format version written in every header.
const Version = 1

// HeaderSize is the size of the common header.
const HeaderSize = 6

// MaxDim bounds the parameter count an encoding may declare.
const MaxDim = 1 << 28

// Errors returned by encoders and decoders; test with errors.Is.
var (
	ErrHeader    = errors.New("bad header")
	ErrLength    = errors.New("bad length")
	ErrNonFinite = errors.New("non-finite value")
	ErrIndex     = errors.New("bad index")
	ErrRange     = errors.New("value out of range")
	ErrConfig    = errors.New("invalid codec configuration")
	ErrNegotiate = errors.New("no common codec")
)

// Encoder turns a delta into bytes.
type Encoder interface {
	// ID is the codec written in the header.
	ID() ID
	// EncodedSize is the exact size in bytes of the encoding of a
	// dim-parameter delta.
	EncodedSize(dim int) int
	// Encode appends the encoding of delta to dst and returns the result.
	Encode(dst []byte, delta []float32) ([]byte, error)
}

// Decode decodes any known encoding into dst, whose length must equal the
// declared dimension, and returns the codec used.
func Decode(dst []float32, src []byte) (ID, error) {
	if len(src) < 1 {
		return 0, fmt.Errorf("decode: %w: empty", ErrHeader)
	}
	id := ID(src[0])
	var err error
	switch id {
	case Float32:
		err = DecodeFloat32(dst, src)
	case Float16:
		err = DecodeFloat16(dst, src)
	case Int8:
		err = DecodeInt8(dst, src)
	case TopK:
		err = DecodeTopK(dst, src)
	default:
		return 0, fmt.Errorf("decode: %w: unknown codec %d", ErrHeader, src[0])
	}
	return id, err
}

// Negotiate returns the first codec of preferred (the server's order) that
// the client supports.
func Negotiate(preferred, supported []ID) (ID, error) {
	for _, p := range preferred {
		if !p.Valid() {
			continue
		}
		for _, s := range supported {
			if p == s {
				return p, nil
			}
		}
	}
	return 0, fmt.Errorf("negotiate %v with %v: %w", preferred, supported, ErrNegotiate)
}

func appendHeader(dst []byte, id ID, dim int) []byte {
	dst = append(dst, byte(id), Version)
	return binary.LittleEndian.AppendUint32(dst, uint32(dim))
}

// readHeader checks the header against the codec and destination and
// returns the body.
func readHeader(src []byte, id ID, dim int) ([]byte, error) {
	if len(src) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, need %d", ErrHeader, len(src), HeaderSize)
	}
	if ID(src[0]) != id {
		return nil, fmt.Errorf("%w: codec %v, want %v", ErrHeader, ID(src[0]), id)
	}
	if src[1] != Version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrHeader, src[1], Version)
	}
	n := binary.LittleEndian.Uint32(src[2:])
	if n > MaxDim || int(n) != dim {
		return nil, fmt.Errorf("%w: declares %d parameters, expected %d", ErrLength, n, dim)
	}
	return src[HeaderSize:], nil
}

// grow appends n bytes to dst and returns the result and the new bytes.
func grow(dst []byte, n int) ([]byte, []byte) {
	dst = slices.Grow(dst, n)
	start := len(dst)
	dst = dst[:start+n]
	return dst, dst[start:]
}

func checkEncodeInput(delta []float32) error {
	if len(delta) > MaxDim {
		return fmt.Errorf("%w: %d parameters exceed %d", ErrLength, len(delta), MaxDim)
	}
	for i, x := range delta {
		if !finite32(x) {
			return fmt.Errorf("%w at index %d", ErrNonFinite, i)
		}
	}
	return nil
}

func finite32(x float32) bool {
	return math.Float32bits(x)&0x7f800000 != 0x7f800000
}
