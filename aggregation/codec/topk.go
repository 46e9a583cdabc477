package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// TopKCodec sends only the k largest-magnitude coordinates as (index,
// value) pairs sorted by index. With error feedback the encoder keeps a
// residual: each round it sends the top k of delta+residual and keeps the
// rest, so what is not sent now is sent later (Stich et al. 2018). Exactly:
// decode(encode(delta)) + residual_after = delta + residual_before.
//
// Layout after the header: k (uint32), k uint32 indices strictly
// increasing, then k float32 values. A TopKCodec is client state and not
// safe for concurrent use.
type TopKCodec struct {
	k             int
	errorFeedback bool
	residual      []float32
	acc           []float32
	mag           []float32
}

// NewTopK returns a top-k encoder sending k coordinates per update (all of
// them when the delta is shorter). errorFeedback keeps the unsent residual.
func NewTopK(k int, errorFeedback bool) (*TopKCodec, error) {
	if k < 1 || k > MaxDim {
		return nil, fmt.Errorf("topk codec: %w: k %d not in 1..%d", ErrConfig, k, MaxDim)
	}
	return &TopKCodec{k: k, errorFeedback: errorFeedback}, nil
}

// ID implements Encoder.
func (*TopKCodec) ID() ID { return TopK }

// EncodedSize implements Encoder.
func (c *TopKCodec) EncodedSize(dim int) int { return HeaderSize + 4 + 8*min(c.k, dim) }

// Residual is the error-feedback memory (nil before the first Encode or
// without error feedback). It is owned by the codec.
func (c *TopKCodec) Residual() []float32 { return c.residual }

// ResetResidual forgets the error-feedback memory, e.g. when the global
// model changes shape.
func (c *TopKCodec) ResetResidual() { c.residual = c.residual[:0] }

// Encode implements Encoder.
func (c *TopKCodec) Encode(dst []byte, delta []float32) ([]byte, error) {
	if err := checkEncodeInput(delta); err != nil {
		return dst, fmt.Errorf("encode topk: %w", err)
	}
	n := len(delta)
	if c.errorFeedback && len(c.residual) != 0 && len(c.residual) != n {
		return dst, fmt.Errorf("encode topk: %w: residual has %d parameters, delta %d", ErrLength, len(c.residual), n)
	}
	c.acc = append(c.acc[:0], delta...)
	if c.errorFeedback && len(c.residual) == n {
		for i, r := range c.residual {
			c.acc[i] += r
		}
		if err := checkEncodeInput(c.acc); err != nil {
			return dst, fmt.Errorf("encode topk: delta plus residual: %w", err)
		}
	}
	k := min(c.k, n)
	dst = appendHeader(dst, TopK, n)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(k))
	if k == 0 {
		return dst, nil
	}
	c.mag = c.mag[:0]
	for _, x := range c.acc {
		c.mag = append(c.mag, float32(math.Abs(float64(x))))
	}
	thr := kthLargest(c.mag, k)
	above := 0
	for _, x := range c.acc {
		if float32(math.Abs(float64(x))) > thr {
			above++
		}
	}
	ties := k - above
	idxStart := len(dst)
	dst = append(dst, make([]byte, 8*k)...)
	idx, val := dst[idxStart:idxStart+4*k], dst[idxStart+4*k:]
	if c.errorFeedback {
		c.residual = append(c.residual[:0], c.acc...)
	}
	j := 0
	for i, x := range c.acc {
		a := float32(math.Abs(float64(x)))
		if a > thr || (a == thr && ties > 0) {
			if a == thr {
				ties--
			}
			binary.LittleEndian.PutUint32(idx[4*j:], uint32(i))
			binary.LittleEndian.PutUint32(val[4*j:], math.Float32bits(x))
			if c.errorFeedback {
				c.residual[i] = 0
			}
			j++
		}
	}
	if j != k {
		panic(fmt.Sprintf("topk: selected %d of %d", j, k))
	}
	return dst, nil
}

// kthLargest returns the k-th largest value of v (1-based), reordering v.
func kthLargest(v []float32, k int) float32 {
	target := len(v) - k // index in ascending order
	lo, hi := 0, len(v)-1
	for lo < hi {
		// Median of three pivot, Hoare partition.
		mid := lo + (hi-lo)/2
		a, b, c := v[lo], v[mid], v[hi]
		p := max(min(a, b), min(max(a, b), c))
		i, j := lo, hi
		for i <= j {
			for v[i] < p {
				i++
			}
			for v[j] > p {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case target <= j:
			hi = j
		case target >= i:
			lo = i
		default:
			return v[target]
		}
	}
	return v[target]
}

// DecodeTopK decodes a TopK encoding into dst; coordinates not sent are 0.
func DecodeTopK(dst []float32, src []byte) error {
	body, err := readHeader(src, TopK, len(dst))
	if err != nil {
		return fmt.Errorf("decode topk: %w", err)
	}
	if len(body) < 4 {
		return fmt.Errorf("decode topk: %w: missing count", ErrLength)
	}
	k64 := uint64(binary.LittleEndian.Uint32(body))
	if k64 > uint64(len(dst)) {
		return fmt.Errorf("decode topk: %w: k %d exceeds dimension %d", ErrLength, k64, len(dst))
	}
	k := int(k64)
	body = body[4:]
	if len(body) != 8*k {
		return fmt.Errorf("decode topk: %w: body %d bytes, want %d", ErrLength, len(body), 8*k)
	}
	idx, val := body[:4*k], body[4*k:]
	prev := -1
	for j := range k {
		i := int(binary.LittleEndian.Uint32(idx[4*j:]))
		if i <= prev || i >= len(dst) {
			return fmt.Errorf("decode topk: %w: index %d at position %d (previous %d, dimension %d)", ErrIndex, i, j, prev, len(dst))
		}
		if !finite32(math.Float32frombits(binary.LittleEndian.Uint32(val[4*j:]))) {
			return fmt.Errorf("decode topk: %w at index %d", ErrNonFinite, i)
		}
		prev = i
	}
	clear(dst)
	for j := range k {
		i := binary.LittleEndian.Uint32(idx[4*j:])
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(val[4*j:]))
	}
	return nil
}
