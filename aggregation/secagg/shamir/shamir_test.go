package shamir

import (
	"bytes"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"testing"
)

type seededReader struct{ r *mrand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func testRand(seed byte) seededReader {
	return seededReader{mrand.NewChaCha8([32]byte{seed})}
}

func points(n int) []uint64 {
	xs := make([]uint64, n)
	for i := range xs {
		xs[i] = uint64(i + 1)
	}
	return xs
}

// TestFieldAgainstBigInt checks mul, add, sub and inv against math/big.
func TestFieldAgainstBigInt(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	bp := new(big.Int).SetUint64(P)
	edge := []uint64{0, 1, 2, P - 1, P - 2, 1 << 60, P / 2}
	for i := 0; i < 20000; i++ {
		a, b := r.Uint64N(P), r.Uint64N(P)
		if i < len(edge)*len(edge) {
			a, b = edge[i%len(edge)], edge[i/len(edge)]
		}
		ba, bb := new(big.Int).SetUint64(a), new(big.Int).SetUint64(b)
		want := new(big.Int).Mod(new(big.Int).Mul(ba, bb), bp).Uint64()
		if got := mul(a, b); got != want {
			t.Fatalf("mul(%d,%d)=%d want %d", a, b, got, want)
		}
		if got, want := add(a, b), new(big.Int).Mod(new(big.Int).Add(ba, bb), bp).Uint64(); got != want {
			t.Fatalf("add(%d,%d)=%d want %d", a, b, got, want)
		}
		if got, want := sub(a, b), new(big.Int).Mod(new(big.Int).Sub(ba, bb), bp).Uint64(); got != want {
			t.Fatalf("sub(%d,%d)=%d want %d", a, b, got, want)
		}
		if a != 0 && i%50 == 0 {
			if got := mul(a, inv(a)); got != 1 {
				t.Fatalf("a*inv(a)=%d for a=%d", got, a)
			}
		}
	}
}

// TestAnyTSharesReconstruct: every t-subset of the n shares gives the secret.
func TestAnyTSharesReconstruct(t *testing.T) {
	cases := []struct{ n, t, secretLen int }{
		{1, 1, 32}, {3, 2, 32}, {5, 3, 32}, {7, 4, 1}, {8, 8, 33}, {6, 1, 14},
	}
	for _, tc := range cases {
		secret := make([]byte, tc.secretLen)
		testRand(byte(tc.n)).Read(secret)
		shares, err := Split(secret, points(tc.n), tc.t, testRand(9))
		if err != nil {
			t.Fatal(err)
		}
		subsets := 0
		for mask := 0; mask < 1<<tc.n; mask++ {
			var sub []Share
			for i := 0; i < tc.n; i++ {
				if mask&(1<<i) != 0 {
					sub = append(sub, shares[i])
				}
			}
			if len(sub) < tc.t {
				continue
			}
			got, err := Combine(sub, tc.t, tc.secretLen)
			if err != nil {
				t.Fatalf("n=%d t=%d subset %b: %v", tc.n, tc.t, mask, err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("n=%d t=%d subset %b: wrong secret", tc.n, tc.t, mask)
			}
			subsets++
		}
		if subsets == 0 {
			t.Fatalf("n=%d t=%d: no subset tried", tc.n, tc.t)
		}
	}
}

// TestTMinusOneSharesFail: Combine refuses t-1 shares, and t-1 shares are
// equally consistent with any other secret: for a different secret we build
// a degree t-1 polynomial through the same t-1 points, so nothing about the
// secret is determined.
func TestTMinusOneSharesFail(t *testing.T) {
	const n, th = 6, 4
	secret := bytes.Repeat([]byte{0xAB}, 32)
	shares, err := Split(secret, points(n), th, testRand(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Combine(shares[:th-1], th, 32); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("t-1 shares: err=%v, want ErrTooFewShares", err)
	}
	other := bytes.Repeat([]byte{0x11}, 32)
	// Forge the t-th share so that the t-1 real ones plus it reconstruct other.
	forged := Share{X: shares[th-1].X, Y: make([]uint64, Chunks(32))}
	xs := []uint64{}
	for _, s := range shares[:th-1] {
		xs = append(xs, s.X)
	}
	xs = append(xs, 0)
	w := lagrangeAt(xs, forged.X) // evaluate at forged.X the poly through (xs_i, y_i), (0, other)
	for c := range forged.Y {
		var acc uint64
		for i, s := range shares[:th-1] {
			acc = add(acc, mul(w[i], s.Y[c]))
		}
		forged.Y[c] = add(acc, mul(w[th-1], chunkValue(other, c)))
	}
	got, err := Combine(append(append([]Share{}, shares[:th-1]...), forged), th, 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, other) {
		t.Fatal("t-1 real shares plus a chosen share did not yield the chosen secret")
	}
}

func TestCombineRejects(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	shares, err := Split(secret, points(5), 3, testRand(2))
	if err != nil {
		t.Fatal(err)
	}
	tampered := Share{X: shares[3].X, Y: append([]uint64{}, shares[3].Y...)}
	tampered.Y[2] = add(tampered.Y[2], 1)
	outOfField := Share{X: shares[3].X, Y: append([]uint64{}, shares[3].Y...)}
	outOfField.Y[0] = P
	cases := []struct {
		name   string
		shares []Share
		t      int
		want   error
	}{
		{"duplicate index", []Share{shares[0], shares[1], shares[0]}, 3, ErrDuplicateIndex},
		{"too few", shares[:2], 3, ErrTooFewShares},
		{"zero point", []Share{{X: 0, Y: shares[0].Y}, shares[1], shares[2]}, 3, ErrInvalidShare},
		{"short share", []Share{{X: 1, Y: shares[0].Y[:4]}, shares[1], shares[2]}, 3, ErrInvalidShare},
		{"out of field", []Share{shares[0], shares[1], shares[2], outOfField}, 3, ErrInvalidShare},
		{"tampered extra share", []Share{shares[0], shares[1], shares[2], tampered}, 3, ErrInconsistent},
		{"bad threshold", shares, 0, ErrInvalidThreshold},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Combine(tc.shares, tc.t, 32); !errors.Is(err, tc.want) {
				t.Fatalf("err=%v want %v", err, tc.want)
			}
		})
	}
}

func TestSplitRejects(t *testing.T) {
	cases := []struct {
		name string
		xs   []uint64
		t    int
		want error
	}{
		{"threshold above n", points(3), 4, ErrInvalidThreshold},
		{"threshold zero", points(3), 0, ErrInvalidThreshold},
		{"duplicate point", []uint64{1, 2, 2}, 2, ErrDuplicateIndex},
		{"zero point", []uint64{0, 1, 2}, 2, ErrInvalidShare},
		{"point not in field", []uint64{P, 1, 2}, 2, ErrInvalidShare},
	}
	for _, tc := range cases {
		if _, err := Split([]byte("secret"), tc.xs, tc.t, testRand(3)); !errors.Is(err, tc.want) {
			t.Errorf("%s: err=%v want %v", tc.name, err, tc.want)
		}
	}
}

// TestSharesLookUniform: with t=2, a single share of a fixed secret is the
// secret plus a uniform coefficient times x, so its values spread over the
// field; the mean of many draws of the top bit is near 1/2.
func TestSharesLookUniform(t *testing.T) {
	secret := make([]byte, 7)
	r := testRand(4)
	ones := 0
	const draws = 4000
	for i := 0; i < draws; i++ {
		s, err := Split(secret, []uint64{5, 9}, 2, r)
		if err != nil {
			t.Fatal(err)
		}
		if s[0].Y[0]>>60 == 1 {
			ones++
		}
	}
	// P(top bit of a uniform value in [0, 2^61-1) is 1) ~ 1/2; 6 sigma band.
	if ones < draws/2-190 || ones > draws/2+190 {
		t.Fatalf("top bit set in %d of %d shares of an all-zero secret", ones, draws)
	}
}

func TestParseShareY(t *testing.T) {
	shares, err := Split(bytes.Repeat([]byte{3}, 32), points(3), 2, testRand(5))
	if err != nil {
		t.Fatal(err)
	}
	enc := AppendShareY(nil, shares[1])
	got, err := ParseShareY(2, enc, 32)
	if err != nil {
		t.Fatal(err)
	}
	if got.X != 2 || len(got.Y) != 5 || got.Y[4] != shares[1].Y[4] {
		t.Fatalf("round trip mismatch: %+v vs %+v", got, shares[1])
	}
	bad := append([]byte{}, enc...)
	for i := 0; i < 8; i++ {
		bad[i] = 0xFF
	}
	for _, tc := range []struct {
		name string
		x    uint64
		b    []byte
	}{{"short", 2, enc[:39]}, {"long", 2, append(enc, 0)}, {"out of field", 2, bad}, {"zero x", 0, enc}} {
		if _, err := ParseShareY(tc.x, tc.b, 32); !errors.Is(err, ErrInvalidShare) {
			t.Errorf("%s: err=%v want ErrInvalidShare", tc.name, err)
		}
	}
}

func FuzzParseShareY(f *testing.F) {
	shares, _ := Split(bytes.Repeat([]byte{3}, 32), points(3), 2, testRand(5))
	good := AppendShareY(nil, shares[0])
	f.Add(uint64(1), good)
	f.Add(uint64(0), good)
	f.Add(uint64(1), good[:10])
	f.Add(uint64(P), bytes.Repeat([]byte{0xFF}, 40))
	f.Fuzz(func(t *testing.T, x uint64, b []byte) {
		s, err := ParseShareY(x, b, 32)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendShareY(nil, s), b) {
			t.Fatal("accepted share does not re-encode to its input")
		}
	})
}

// TestLagrangeAgainstNaive: the batch-inverted weights equal the textbook
// formula with one inversion per weight.
func TestLagrangeAgainstNaive(t *testing.T) {
	r := mrand.New(mrand.NewPCG(5, 6))
	for n := 1; n < 20; n++ {
		xs := make([]uint64, n)
		for i := range xs {
			xs[i] = uint64(3*i+1) + r.Uint64N(2)*uint64(n)*3 // distinct
		}
		if checkPoints(xs) != nil {
			continue
		}
		for _, x := range []uint64{0, xs[0], r.Uint64N(P), P - 1} {
			got := lagrangeAt(xs, x)
			for i, xi := range xs {
				num, den := uint64(1), uint64(1)
				for j, xj := range xs {
					if i != j {
						num, den = mul(num, sub(x, xj)), mul(den, sub(xi, xj))
					}
				}
				if want := mul(num, inv(den)); got[i] != want {
					t.Fatalf("n=%d x=%d weight %d: %d want %d", n, x, i, got[i], want)
				}
			}
		}
	}
}

func BenchmarkSplitCombine32(b *testing.B) {
	secret := bytes.Repeat([]byte{1}, 32)
	xs := points(31)
	r := testRand(6)
	for b.Loop() {
		s, err := Split(secret, xs, 16, r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Combine(s[:16], 16, 32); err != nil {
			b.Fatal(err)
		}
	}
}
