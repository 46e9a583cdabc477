package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// MaxInt8Block bounds the block size of the Int8 codec.
const MaxInt8Block = 1 << 16

// Int8Codec quantizes each block of BlockSize parameters to int8 with the
// block scale s = max|x|/127 (rounded up to a float32 and stored) and
// unbiased stochastic rounding: q = floor(x/s) + Bernoulli(frac(x/s)), so
// E[q·s] = x and |x/s| <= 127 needs no clamping.
//
// Error bound, per element: |x - dec| <= s, where dec is s·q rounded to
// float32 (|x - s·q| < s exactly; the rounding adds at most half an ulp of
// dec).
//
// Layout after the header: block size (uint32), then per block its float32
// scale followed by one int8 per parameter. -128 never appears.
type Int8Codec struct {
	blockSize int
	rng       *rand.Rand
}

// NewInt8 returns an Int8 encoder; rng drives the stochastic rounding and
// must not be shared between goroutines.
func NewInt8(blockSize int, rng *rand.Rand) (*Int8Codec, error) {
	if blockSize < 1 || blockSize > MaxInt8Block {
		return nil, fmt.Errorf("int8 codec: %w: block size %d not in 1..%d", ErrConfig, blockSize, MaxInt8Block)
	}
	if rng == nil {
		return nil, fmt.Errorf("int8 codec: %w: nil random source", ErrConfig)
	}
	return &Int8Codec{blockSize: blockSize, rng: rng}, nil
}

// ID implements Encoder.
func (*Int8Codec) ID() ID { return Int8 }

// EncodedSize implements Encoder.
func (c *Int8Codec) EncodedSize(dim int) int {
	blocks := (dim + c.blockSize - 1) / c.blockSize
	return HeaderSize + 4 + 4*blocks + dim
}

// Encode implements Encoder.
func (c *Int8Codec) Encode(dst []byte, delta []float32) ([]byte, error) {
	if err := checkEncodeInput(delta); err != nil {
		return dst, fmt.Errorf("encode int8: %w", err)
	}
	dst = appendHeader(dst, Int8, len(delta))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.blockSize))
	dst, body := grow(dst, c.EncodedSize(len(delta))-HeaderSize-4)
	for lo := 0; lo < len(delta); lo += c.blockSize {
		blk := delta[lo:min(lo+c.blockSize, len(delta))]
		// For finite floats, magnitude order is the order of the bits
		// without the sign.
		var mb uint32
		for _, x := range blk {
			if b := math.Float32bits(x) & 0x7fffffff; b > mb {
				mb = b
			}
		}
		scale := int8Scale(math.Float32frombits(mb))
		binary.LittleEndian.PutUint32(body, math.Float32bits(scale))
		q := body[4 : 4+len(blk)]
		body = body[4+len(blk):]
		if scale == 0 {
			clear(q)
			continue
		}
		inv := 1 / float64(scale)
		for i, x := range blk {
			v := float64(x) * inv
			fl := math.Floor(v)
			// Round up with probability frac(v): compare 53 random bits.
			if float64(c.rng.Uint64()>>11)*0x1p-53 < v-fl {
				fl++
			}
			qi := int(fl)
			if qi > 127 { // unreachable: the scale is rounded up
				qi = 127
			} else if qi < -127 {
				qi = -127
			}
			q[i] = byte(int8(qi))
		}
	}
	return dst, nil
}

// int8Scale is max|x|/127 rounded up to a float32, so that |x|/scale never
// exceeds 127 (and a tiny nonzero block never gets a zero scale).
func int8Scale(m float32) float32 {
	exact := float64(m) / 127
	s := float32(exact)
	if float64(s) < exact {
		s = math.Nextafter32(s, float32(math.Inf(1)))
	}
	return s
}

// DecodeInt8 decodes an Int8 encoding into dst.
func DecodeInt8(dst []float32, src []byte) error {
	body, err := readHeader(src, Int8, len(dst))
	if err != nil {
		return fmt.Errorf("decode int8: %w", err)
	}
	if len(body) < 4 {
		return fmt.Errorf("decode int8: %w: missing block size", ErrLength)
	}
	bs := binary.LittleEndian.Uint32(body)
	if bs < 1 || bs > MaxInt8Block {
		return fmt.Errorf("decode int8: %w: block size %d not in 1..%d", ErrLength, bs, MaxInt8Block)
	}
	body = body[4:]
	blockSize := int(bs)
	blocks := (len(dst) + blockSize - 1) / blockSize
	if want := 4*blocks + len(dst); len(body) != want {
		return fmt.Errorf("decode int8: %w: body %d bytes, want %d", ErrLength, len(body), want)
	}
	for b, lo := 0, 0; b < blocks; b, lo = b+1, lo+blockSize {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(body))
		if !finite32(scale) || scale < 0 || math.Signbit(float64(scale)) {
			return fmt.Errorf("decode int8: %w: block %d scale %v", ErrRange, b, scale)
		}
		body = body[4:]
		n := min(blockSize, len(dst)-lo)
		for i := range n {
			q := int8(body[i])
			if q == -128 {
				return fmt.Errorf("decode int8: %w: -128 at index %d", ErrRange, lo+i)
			}
			v := float32(float64(q) * float64(scale))
			if !finite32(v) {
				return fmt.Errorf("decode int8: %w at index %d", ErrNonFinite, lo+i)
			}
			dst[lo+i] = v
		}
		body = body[n:]
	}
	return nil
}
