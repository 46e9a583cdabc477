// Package shamir implements t-out-of-n Shamir secret sharing of byte strings
// over the prime field GF(2^61-1).
//
// Why this field: 2^61-1 is a Mersenne prime, so a product of two field
// elements reduces with shifts and adds on uint64 (math/bits.Mul64), without
// math/big and without allocation, and evaluation points up to 2^61-2 allow
// any realistic number of share holders. A secret is cut into 7-byte chunks
// (each below 2^56 < p) and every chunk is shared with its own independent
// random polynomial of degree t-1 at the same evaluation points, so t-1 shares
// reveal nothing about any chunk (information-theoretically) and any t shares
// determine all of them. A 32-byte secret takes 5 chunks, i.e. 40 bytes per
// share plus the evaluation point.
//
// Combine rejects fewer than t shares, duplicate or zero evaluation points
// and out-of-range values; when given more than t shares it also checks that
// every extra share lies on the interpolated polynomials (ErrInconsistent),
// which detects a corrupted share as long as t honest ones are present.
// Shares are not authenticated here: callers transport them inside an AEAD.
package shamir

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// P is the field modulus 2^61-1.
const P uint64 = 1<<61 - 1

// ChunkBytes is the number of secret bytes carried by one field element.
const ChunkBytes = 7

// Sentinel errors.
var (
	ErrTooFewShares     = errors.New("shamir: fewer shares than the threshold")
	ErrDuplicateIndex   = errors.New("shamir: duplicate evaluation point")
	ErrInconsistent     = errors.New("shamir: shares are not consistent with one secret")
	ErrInvalidShare     = errors.New("shamir: invalid share")
	ErrInvalidThreshold = errors.New("shamir: invalid threshold")
)

// Share is one holder's share: the evaluation point X (never 0) and one field
// element per chunk of the secret.
type Share struct {
	X uint64
	Y []uint64
}

// Chunks returns how many field elements a secret of n bytes needs.
func Chunks(n int) int { return (n + ChunkBytes - 1) / ChunkBytes }

// ShareLen is the encoded length (Y values only) of a share of an n-byte
// secret.
func ShareLen(n int) int { return 8 * Chunks(n) }

// Split shares secret among the evaluation points xs (distinct, in [1, P))
// with threshold t (1 <= t <= len(xs)), drawing coefficients from rand.
// Share i belongs to xs[i].
func Split(secret []byte, xs []uint64, t int, rand io.Reader) ([]Share, error) {
	if t < 1 || t > len(xs) {
		return nil, fmt.Errorf("split among %d holders with threshold %d: %w", len(xs), t, ErrInvalidThreshold)
	}
	if err := checkPoints(xs); err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	nc := Chunks(len(secret))
	shares := make([]Share, len(xs))
	for i, x := range xs {
		shares[i] = Share{X: x, Y: make([]uint64, nc)}
	}
	coef := make([]uint64, t)
	var buf [8]byte
	for c := 0; c < nc; c++ {
		coef[0] = chunkValue(secret, c)
		for j := 1; j < t; j++ {
			v, err := randomElement(rand, buf[:])
			if err != nil {
				return nil, fmt.Errorf("split: draw coefficient: %w", err)
			}
			coef[j] = v
		}
		for i, x := range xs {
			shares[i].Y[c] = evalPoly(coef, x)
		}
	}
	clear(coef)
	return shares, nil
}

// Combine reconstructs a secret of secretLen bytes from at least t shares.
func Combine(shares []Share, t int, secretLen int) ([]byte, error) {
	if t < 1 {
		return nil, fmt.Errorf("combine with threshold %d: %w", t, ErrInvalidThreshold)
	}
	if len(shares) < t {
		return nil, fmt.Errorf("combine %d shares, need %d: %w", len(shares), t, ErrTooFewShares)
	}
	nc := Chunks(secretLen)
	xs := make([]uint64, len(shares))
	for i, s := range shares {
		if len(s.Y) != nc {
			return nil, fmt.Errorf("share %d has %d chunks, want %d: %w", i, len(s.Y), nc, ErrInvalidShare)
		}
		for _, y := range s.Y {
			if y >= P {
				return nil, fmt.Errorf("share %d value out of field: %w", i, ErrInvalidShare)
			}
		}
		xs[i] = s.X
	}
	if err := checkPoints(xs); err != nil {
		return nil, fmt.Errorf("combine: %w", err)
	}
	base := newLagrange(xs[:t])
	w0 := base.at(0)
	extra := make([][]uint64, len(shares)-t)
	for j := range extra {
		extra[j] = base.at(xs[t+j])
	}
	out := make([]byte, secretLen)
	for c := 0; c < nc; c++ {
		v := dot(w0, shares[:t], c)
		for j, w := range extra {
			if dot(w, shares[:t], c) != shares[t+j].Y[c] {
				return nil, fmt.Errorf("share at x=%d: %w", shares[t+j].X, ErrInconsistent)
			}
		}
		if !putChunk(out, c, v) {
			return nil, fmt.Errorf("reconstructed chunk %d out of range: %w", c, ErrInconsistent)
		}
	}
	return out, nil
}

// AppendShareY appends the Y values of s as little-endian uint64s.
func AppendShareY(dst []byte, s Share) []byte {
	for _, y := range s.Y {
		dst = binary.LittleEndian.AppendUint64(dst, y)
	}
	return dst
}

// ParseShareY decodes the Y values of a share of a secretLen-byte secret at
// point x, rejecting wrong lengths and values outside the field.
func ParseShareY(x uint64, b []byte, secretLen int) (Share, error) {
	if len(b) != ShareLen(secretLen) {
		return Share{}, fmt.Errorf("share of %d bytes, want %d: %w", len(b), ShareLen(secretLen), ErrInvalidShare)
	}
	if x == 0 || x >= P {
		return Share{}, fmt.Errorf("share point %d: %w", x, ErrInvalidShare)
	}
	s := Share{X: x, Y: make([]uint64, len(b)/8)}
	for i := range s.Y {
		s.Y[i] = binary.LittleEndian.Uint64(b[8*i:])
		if s.Y[i] >= P {
			return Share{}, fmt.Errorf("share value %d out of field: %w", i, ErrInvalidShare)
		}
	}
	return s, nil
}

func checkPoints(xs []uint64) error {
	seen := make(map[uint64]struct{}, len(xs))
	for _, x := range xs {
		if x == 0 || x >= P {
			return fmt.Errorf("evaluation point %d: %w", x, ErrInvalidShare)
		}
		if _, dup := seen[x]; dup {
			return fmt.Errorf("evaluation point %d: %w", x, ErrDuplicateIndex)
		}
		seen[x] = struct{}{}
	}
	return nil
}

// chunkValue reads chunk c of secret as a little-endian integer (< 2^56).
func chunkValue(secret []byte, c int) uint64 {
	var v uint64
	end := min((c+1)*ChunkBytes, len(secret))
	for i := end - 1; i >= c*ChunkBytes; i-- {
		v = v<<8 | uint64(secret[i])
	}
	return v
}

// putChunk writes v as chunk c of out; false if v does not fit the chunk.
func putChunk(out []byte, c int, v uint64) bool {
	end := min((c+1)*ChunkBytes, len(out))
	for i := c * ChunkBytes; i < end; i++ {
		out[i] = byte(v)
		v >>= 8
	}
	return v == 0
}

func randomElement(rand io.Reader, buf []byte) (uint64, error) {
	for {
		if _, err := io.ReadFull(rand, buf[:8]); err != nil {
			return 0, err
		}
		v := binary.LittleEndian.Uint64(buf) & (1<<61 - 1)
		if v < P { // rejection sampling: exactly uniform in [0, P)
			return v, nil
		}
	}
}

func dot(w []uint64, shares []Share, c int) uint64 {
	var acc uint64
	for i, s := range shares {
		acc = add(acc, mul(w[i], s.Y[c]))
	}
	return acc
}

// lagrangeAt returns the Lagrange weights that evaluate at x the polynomial
// through the points xs.
func lagrangeAt(xs []uint64, x uint64) []uint64 { return newLagrange(xs).at(x) }

// lagrange holds, for distinct points xs, the inverses of the Lagrange
// denominators prod_{j != i} (x_i - x_j), found with one field inversion
// (Montgomery's batch trick), so weights at any point cost O(len(xs)).
type lagrange struct {
	xs     []uint64
	invDen []uint64
}

func newLagrange(xs []uint64) lagrange {
	n := len(xs)
	den := make([]uint64, n)
	for i, xi := range xs {
		d := uint64(1)
		for j, xj := range xs {
			if i != j {
				d = mul(d, sub(xi, xj))
			}
		}
		den[i] = d
	}
	// prefix[i] = den[0]*...*den[i-1]; invert the total once.
	prefix := make([]uint64, n+1)
	prefix[0] = 1
	for i, d := range den {
		prefix[i+1] = mul(prefix[i], d)
	}
	inv := inv(prefix[n])
	invDen := make([]uint64, n)
	for i := n - 1; i >= 0; i-- {
		invDen[i] = mul(inv, prefix[i])
		inv = mul(inv, den[i])
	}
	return lagrange{xs: xs, invDen: invDen}
}

// at returns weights w with sum_i w_i*f(x_i) = f(x) for every polynomial f
// of degree < len(xs): w_i = prod_{j != i} (x - x_j) / den_i.
func (l lagrange) at(x uint64) []uint64 {
	n := len(l.xs)
	w := make([]uint64, n)
	suffix := uint64(1)
	for i := n - 1; i >= 0; i-- { // w_i temporarily holds prod_{j > i} (x - x_j)
		w[i] = suffix
		suffix = mul(suffix, sub(x, l.xs[i]))
	}
	prefix := uint64(1)
	for i := range w {
		w[i] = mul(mul(w[i], prefix), l.invDen[i])
		prefix = mul(prefix, sub(x, l.xs[i]))
	}
	return w
}

func evalPoly(coef []uint64, x uint64) uint64 {
	var acc uint64
	for i := len(coef) - 1; i >= 0; i-- {
		acc = add(mul(acc, x), coef[i])
	}
	return acc
}

func add(a, b uint64) uint64 {
	s := a + b // < 2^62, no overflow
	if s >= P {
		s -= P
	}
	return s
}

func sub(a, b uint64) uint64 {
	if a >= b {
		return a - b
	}
	return a + P - b
}

func mul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	// a*b = hi*2^64 + lo = (hi<<3 | lo>>61)*2^61 + (lo & P), and 2^61 = 1 mod P.
	s := (lo & P) + (hi<<3 | lo>>61) // <= 2P
	if s >= P {
		s -= P
	}
	if s >= P {
		s -= P
	}
	return s
}

func inv(a uint64) uint64 {
	// Fermat: a^(P-2); a != 0 is guaranteed by distinct evaluation points.
	r, e := uint64(1), P-2
	for e > 0 {
		if e&1 == 1 {
			r = mul(r, a)
		}
		a = mul(a, a)
		e >>= 1
	}
	return r
}
