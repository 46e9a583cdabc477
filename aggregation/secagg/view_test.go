package secagg

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"testing"

	"github.com/fedge-dev/fedge/aggregation/secagg/shamir"
)

// TestServerViewRevealsNoSingleInput records everything the server receives
// in a round (with a dropout, so both kinds of share get revealed) and shows,
// concretely, what it can and cannot compute about one surviving client u:
//
//  1. For every client the view holds shares of at most one of its two
//     secrets: survivors' b (never s_sk), dropped clients' s_sk (never b).
//     So for u the view holds 0 < t shares of s_sk_u.
//  2. No private scalar or seed of any client appears in any message.
//  3. Everything the server can unmask from u's masked input (b_u and the
//     masks shared with dropped neighbours, both reconstructed from the
//     view) leaves Encode(x_u) + R, where R is the sum of u's pairwise masks
//     with surviving neighbours: PRG outputs under seeds that need s_sk_u or
//     a survivor's s_sk. R is nonzero everywhere and its top bits pass a
//     chi-square uniformity test, so the residual hides x_u (a statistical
//     check of the PRG output, not a proof; the proof is the paper's).
//  4. The threshold is exactly the boundary: the view plus the shares of
//     s_sk_u held by t-1 colluding clients does not reconstruct s_sk_u
//     (ErrTooFewShares), while t colluding shares do, and then the server
//     recovers Encode(x_u) exactly.
func TestServerViewRevealsNoSingleInput(t *testing.T) {
	const n, deg, th, dim = 20, 8, 5, 4096
	cfg := testConfig(n, deg, th, dim)
	r := newRound(t, cfg, 40)
	const u = uint32(0)
	nbrs := cfg.NeighboursOf(u)
	dropped := nbrs[3] // a neighbour of u that drops after sharing keys
	r.dropAt[dropped] = StageMaskedInputCollection
	res, err := r.run()
	if err != nil {
		t.Fatal(err)
	}
	r.checkExact(res, r.liveAfter(StageMaskedInputCollection))

	// 1. Count revealed shares per client and kind.
	revealed := map[uint32]map[ShareKind][]shamir.Share{}
	var yu []uint32
	for _, m := range r.seen {
		typ, _, _ := PeekType(m.msg)
		switch typ {
		case MsgUnmaskResponse:
			resp, err := UnmarshalUnmaskResponse(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range resp.Shares {
				if revealed[s.Peer] == nil {
					revealed[s.Peer] = map[ShareKind][]shamir.Share{}
				}
				sh, err := shamir.ParseShareY(uint64(m.from)+1, s.Share[:], 32)
				if err != nil {
					t.Fatal(err)
				}
				revealed[s.Peer][s.Kind] = append(revealed[s.Peer][s.Kind], sh)
			}
		case MsgMaskedInput:
			if m.from == u {
				mi, err := UnmarshalMaskedInput(m.msg)
				if err != nil {
					t.Fatal(err)
				}
				yu = mi.Y
			}
		}
	}
	for v, kinds := range revealed {
		if len(kinds[KindSeed]) > 0 && len(kinds[KindKey]) > 0 {
			t.Fatalf("view holds shares of both secrets of client %d", v)
		}
	}
	if len(revealed[u][KindKey]) != 0 || len(revealed[dropped][KindSeed]) != 0 {
		t.Fatal("view holds the survivor's key shares or the dropped client's seed shares")
	}

	// 2. No secret material in the clear.
	for i, c := range r.clients {
		for _, secret := range [][]byte{c.cSK.Bytes(), c.sSK.Bytes(), c.seed[:]} {
			for _, m := range r.seen {
				if bytes.Contains(m.msg, secret) {
					t.Fatalf("a secret of client %d appears in a message from %d", i, m.from)
				}
			}
		}
	}

	// 3. Strip everything the view allows from y_u.
	bu, err := shamir.Combine(revealed[u][KindSeed], th, 32)
	if err != nil {
		t.Fatal(err)
	}
	skDropped, err := shamir.Combine(revealed[dropped][KindKey], th, 32)
	if err != nil {
		t.Fatal(err)
	}
	resid := append([]uint32(nil), yu...)
	applyMask(resid, [32]byte(bu), domainSelfMask, -1)
	removePair(t, resid, r, dropped, skDropped, u)
	enc, err := cfg.Encode(r.inputs[u], 0)
	if err != nil {
		t.Fatal(err)
	}
	hist := make([]int, 16)
	for i := range resid {
		resid[i] -= enc[i] // R: what the server cannot remove
		if resid[i] == 0 {
			t.Fatalf("residual mask is zero at %d", i)
		}
		hist[resid[i]>>28]++
	}
	chi2 := 0.0
	exp := float64(dim) / 16
	for _, h := range hist {
		chi2 += (float64(h) - exp) * (float64(h) - exp) / exp
	}
	if chi2 > 37.7 { // chi-square, 15 degrees of freedom, p = 0.001
		t.Fatalf("residual top bits not uniform: chi2 = %.1f, histogram %v", chi2, hist)
	}

	// 4. Collusion of t-1 versus t holders of u's shares.
	var colluders []shamir.Share
	for _, w := range nbrs {
		if w == dropped || len(colluders) == th {
			continue
		}
		share, ok := r.clients[w].share(ShareRequest{Peer: u, Kind: KindKey})
		if !ok {
			t.Fatalf("holder %d cannot open its share of %d", w, u)
		}
		sh, err := shamir.ParseShareY(uint64(w)+1, share, 32)
		if err != nil {
			t.Fatal(err)
		}
		colluders = append(colluders, sh)
	}
	if _, err := shamir.Combine(colluders[:th-1], th, 32); !errors.Is(err, shamir.ErrTooFewShares) {
		t.Fatalf("t-1 colluding shares: %v, want ErrTooFewShares", err)
	}
	sku, err := shamir.Combine(colluders, th, 32)
	if err != nil {
		t.Fatal(err)
	}
	full := append([]uint32(nil), yu...)
	applyMask(full, [32]byte(bu), domainSelfMask, -1)
	for _, v := range nbrs {
		if v != dropped { // masks with all neighbours that shared keys
			removePair(t, full, r, u, sku, v)
		}
	}
	removePair(t, full, r, dropped, skDropped, u)
	for i := range full {
		if full[i] != enc[i] {
			t.Fatalf("with t colluding shares the input should be exposed; coordinate %d differs", i)
		}
	}
}

// removePair removes from u's masked vector the pairwise mask between a
// (whose s_sk is skA) and b, as added by the client u in {a, b}.
func removePair(t *testing.T, y []uint32, r *round, a uint32, skA []byte, b uint32) {
	t.Helper()
	sk, err := ecdh.X25519().NewPrivateKey(skA)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := agree(sk, r.server.adverts[b].SPK)
	if err != nil {
		t.Fatal(err)
	}
	// The client with the smaller id added +PRG. y belongs to one of a, b.
	owner, other := a, b
	if r.server.u3 != nil && !r.server.u3[a] {
		owner, other = b, a
	}
	sign := -1
	if owner > other {
		sign = +1
	}
	applyMask(y, kdf(ss, purposePairSeed, r.cfg.Round, a, b), domainPairMask, sign)
}
