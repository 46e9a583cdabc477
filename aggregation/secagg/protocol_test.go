package secagg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
)

// Tests named after the steps of Bonawitz et al. 2017, Figure 4 ("Round 0
// (AdvertiseKeys)" ... "Round 4 (Unmasking)"), with the SecAgg+ neighbour
// graph of Bell et al. 2020.

// TestCorrectnessExactSum: "the server outputs z = sum of x_u for u in U3".
// For n in {10, 100, 1000} and random inputs the unmasked result equals the
// plain sum of the quantized inputs exactly.
func TestCorrectnessExactSum(t *testing.T) {
	// Degrees: complete graph for n=10, RecommendedDegree for n=100; for
	// n=1000 degree 12 keeps the test's 1000 clients' signature checks and
	// key agreements (about 25 each per client) affordable under -race;
	// BenchmarkSecAgg runs n=1000 at RecommendedDegree (30).
	cases := []struct{ n, deg, dim int }{{10, 9, 257}, {100, RecommendedDegree(100), 64}, {1000, 12, 8}}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("n=%d", tc.n), func(t *testing.T) {
			th := (min(tc.deg, tc.n-1)+1)/2 + 1
			r := newRound(t, testConfig(tc.n, tc.deg, th, tc.dim), uint64(tc.n))
			res, err := r.run()
			if err != nil {
				t.Fatal(err)
			}
			r.checkExact(res, r.liveAfter(StageUnmasking))
			for s, errs := range r.clientErrs {
				t.Errorf("honest round: %d client refusals in %v: %v", len(errs), s, errs[0])
			}
		})
	}
}

// TestDropoutsAtEveryStage: clients that stop responding in any round (up
// to n - t of them) do not change the correctness of the output: the sum
// covers exactly the clients whose masked input arrived (U3).
func TestDropoutsAtEveryStage(t *testing.T) {
	type drop struct {
		stage   Stage
		clients []uint32
	}
	cases := []struct {
		name          string
		n, deg, th    int
		drops         []drop
		wantSurvivors func(r *round) []uint32
	}{
		{name: "complete/AdvertiseKeys n-t", n: 10, deg: 9, th: 6, drops: []drop{{StageAdvertiseKeys, []uint32{0, 3, 5, 9}}}},
		{name: "complete/ShareKeys n-t", n: 10, deg: 9, th: 6, drops: []drop{{StageShareKeys, []uint32{1, 2, 3, 4}}}},
		{name: "complete/MaskedInputCollection n-t", n: 10, deg: 9, th: 6, drops: []drop{{StageMaskedInputCollection, []uint32{0, 2, 4, 6}}}},
		{name: "complete/ConsistencyCheck n-t", n: 10, deg: 9, th: 6, drops: []drop{{StageConsistencyCheck, []uint32{5, 6, 7, 8}}}},
		{name: "complete/Unmasking n-t", n: 10, deg: 9, th: 6, drops: []drop{{StageUnmasking, []uint32{1, 3, 7, 9}}}},
		{name: "complete/one per stage", n: 10, deg: 9, th: 6, drops: []drop{
			{StageShareKeys, []uint32{0}}, {StageMaskedInputCollection, []uint32{1}},
			{StageConsistencyCheck, []uint32{2}}, {StageUnmasking, []uint32{3}}}},
		{name: "sparse n=100/4% per stage", n: 100, deg: 22, th: 12, drops: []drop{
			{StageAdvertiseKeys, seq(0, 100, 25)}, {StageShareKeys, seq(1, 100, 25)},
			{StageMaskedInputCollection, seq(2, 100, 25)}, {StageConsistencyCheck, seq(3, 100, 25)},
			{StageUnmasking, seq(4, 100, 25)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRound(t, testConfig(tc.n, tc.deg, tc.th, 33), 5)
			for _, d := range tc.drops {
				for _, u := range d.clients {
					r.dropAt[u] = d.stage
				}
			}
			res, err := r.run()
			if err != nil {
				t.Fatal(err)
			}
			// Clients that dropped in round 3 or 4 did send masked inputs:
			// they are in U3 and their inputs are in the sum.
			r.checkExact(res, r.liveAfter(StageMaskedInputCollection))
		})
	}
}

func seq(start, end, step int) []uint32 {
	var out []uint32
	for i := start; i < end; i += step {
		out = append(out, uint32(i))
	}
	return out
}

// TestAbortBelowThreshold: "if |U_i| < t, abort" at every round. The round
// aborts, Result reveals nothing, and when the abort happens before round 4
// no client ever revealed a share.
func TestAbortBelowThreshold(t *testing.T) {
	for s := StageAdvertiseKeys; s <= StageUnmasking; s++ {
		t.Run(s.String(), func(t *testing.T) {
			r := newRound(t, testConfig(10, 9, 6, 5), 11)
			for _, u := range []uint32{0, 2, 4, 6, 8} { // n - t + 1 = 5 drop
				r.dropAt[u] = s
			}
			res, err := r.run()
			if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrTooFew) {
				t.Fatalf("run: res=%v err=%v, want ErrAborted wrapping ErrTooFew", res, err)
			}
			if r.server.Stage() != StageAborted {
				t.Fatalf("server stage %v", r.server.Stage())
			}
			if _, err := r.server.Result(); !errors.Is(err, ErrAborted) {
				t.Fatalf("Result after abort: %v", err)
			}
			if r.server.acc != nil || r.server.revealed != nil {
				t.Fatal("aborted server still holds the masked sum or revealed shares")
			}
			if _, err := r.server.Advance(); !errors.Is(err, ErrWrongStage) {
				t.Fatalf("Advance after abort: %v", err)
			}
			if s < StageUnmasking {
				for _, m := range r.seen {
					if typ, _, _ := PeekType(m.msg); typ == MsgUnmaskResponse {
						t.Fatalf("a share was revealed in a round that aborted at %v", s)
					}
				}
			}
		})
	}
}

// TestUnmaskingRefusesDoubleReveal: in round 4 an honest user never reveals
// both the b_v share and the s_v^SK share of one peer, neither in one
// request nor across requests.
func TestUnmaskingRefusesDoubleReveal(t *testing.T) {
	r := newRound(t, testConfig(10, 9, 6, 4), 3)
	r.dropAt[9] = StageMaskedInputCollection // 9 dropped after sharing: its s_sk may be asked
	var out []Outbound
	for r.server.Stage() < StageUnmasking {
		r.step(out)
		var err error
		if out, err = r.server.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	honest, err := UnmarshalUnmaskRequest(out[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	c := r.clients[out[0].To]
	ask := func(reqs ...ShareRequest) error {
		m := *honest
		m.Requests = reqs
		_, err := c.Unmask(m.Marshal())
		return err
	}
	survivor := uint32(5)
	if err := ask(ShareRequest{survivor, KindSeed}, ShareRequest{survivor, KindKey}); !errors.Is(err, ErrDoubleReveal) {
		t.Fatalf("both shares of %d in one request: %v, want ErrDoubleReveal", survivor, err)
	}
	if err := ask(ShareRequest{survivor, KindKey}); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("key share of a survivor: %v, want ErrInconsistent", err)
	}
	if err := ask(ShareRequest{9, KindSeed}); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("seed share of a dropped client: %v, want ErrInconsistent", err)
	}
	if err := ask(ShareRequest{survivor, KindSeed}); err != nil {
		t.Fatalf("seed share of a survivor: %v", err)
	}
	// A later request for the other share of the same peer is refused
	// because of what the client revealed before.
	if err := ask(ShareRequest{survivor, KindKey}); !errors.Is(err, ErrDoubleReveal) {
		t.Fatalf("key share after seed share: %v, want ErrDoubleReveal", err)
	}
}

// TestAdvertiseKeysSignaturesStopImpersonation: round 1 "verify signatures"
// - a server that substitutes a neighbour's public key (to learn its shares)
// is caught by the client.
func TestAdvertiseKeysSignaturesStopImpersonation(t *testing.T) {
	r := newRound(t, testConfig(6, 5, 4, 2), 8)
	r.tamper = func(s Stage, to uint32, msg []byte) []byte {
		if s != StageShareKeys || to != 0 {
			return msg
		}
		m, err := UnmarshalNeighbourKeys(msg)
		if err != nil {
			t.Fatal(err)
		}
		m.Keys[0].CPK[3] ^= 1 // server's own key in place of the neighbour's
		return m.Marshal()
	}
	res, err := r.run()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.clientErrs[StageShareKeys]) != 1 || !errors.Is(r.clientErrs[StageShareKeys][0], ErrBadSignature) {
		t.Fatalf("client refusals: %v, want one ErrBadSignature", r.clientErrs)
	}
	// Client 0 refused and counts as dropped; the round is still exact.
	r.dropAt[0] = StageShareKeys
	r.checkExact(res, r.liveAfter(StageMaskedInputCollection))
}

// TestConsistencyCheckSignatures: round 4 "verify that each signature is
// valid" - a forged neighbour signature makes the client refuse to unmask.
func TestConsistencyCheckSignatures(t *testing.T) {
	r := newRound(t, testConfig(6, 5, 4, 2), 9)
	r.tamper = func(s Stage, to uint32, msg []byte) []byte {
		if s != StageUnmasking || to != 1 {
			return msg
		}
		m, err := UnmarshalUnmaskRequest(msg)
		if err != nil {
			t.Fatal(err)
		}
		m.Sigs[0].Sig[0] ^= 1
		return m.Marshal()
	}
	res, err := r.run()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.clientErrs[StageUnmasking]) != 1 || !errors.Is(r.clientErrs[StageUnmasking][0], ErrBadSignature) {
		t.Fatalf("client refusals: %v, want one ErrBadSignature", r.clientErrs)
	}
	r.checkExact(res, r.liveAfter(StageMaskedInputCollection))
}

// TestShareKeysTamperedShareFailsAuthentication: shares travel under
// AES-GCM with associated data (round, sender, receiver); a ciphertext the
// server modified fails to open and is left out of the unmask response; the
// remaining shares still reconstruct exactly.
func TestShareKeysTamperedShareFailsAuthentication(t *testing.T) {
	r := newRound(t, testConfig(6, 5, 4, 3), 10)
	r.tamper = func(s Stage, to uint32, msg []byte) []byte {
		if s != StageMaskedInputCollection || to != 2 {
			return msg
		}
		m, err := UnmarshalForwardedShares(msg)
		if err != nil {
			t.Fatal(err)
		}
		m.Shares[0].Ciphertext[nonceLen+9] ^= 0x80
		return m.Marshal()
	}
	res, err := r.run()
	if err != nil {
		t.Fatal(err)
	}
	r.checkExact(res, r.liveAfter(StageMaskedInputCollection))
	for _, m := range r.seen {
		if typ, _, _ := PeekType(m.msg); typ == MsgUnmaskResponse && m.from == 2 {
			resp, err := UnmarshalUnmaskResponse(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Shares) != 5 { // own + 5 neighbours - the tampered one
				t.Fatalf("client 2 revealed %d shares, want 5", len(resp.Shares))
			}
			return
		}
	}
	t.Fatal("no unmask response from client 2")
}

// TestWeightChannelFedAvg: with MaxWeight set the result carries the weight
// sum, and Mean is the weighted average of the clipped inputs up to
// quantization error.
func TestWeightChannelFedAvg(t *testing.T) {
	cfg := testConfig(12, 11, 7, 50)
	cfg.MaxWeight = 100
	r := newRound(t, cfg, 12)
	r.dropAt[4] = StageShareKeys
	res, err := r.run()
	if err != nil {
		t.Fatal(err)
	}
	survivors := r.liveAfter(StageMaskedInputCollection)
	r.checkExact(res, survivors)
	want := make([]float64, cfg.Dim)
	wsum := 0.0
	for _, u := range survivors {
		w := r.weights[u] / cfg.MaxWeight
		wsum += w
		for i, v := range r.inputs[u] {
			want[i] += w * math.Max(-1, math.Min(1, float64(v)))
		}
	}
	mean := res.Mean()
	q := cfg.Quantizer()
	// Per client: value error 0.5/Scale, weight error 0.5/MaxQ.
	tol := float64(len(survivors)) * (0.5/q.Scale + 0.5/float64(q.MaxQ)) / wsum * 4
	if math.Abs(res.WeightSum()-wsum) > float64(len(survivors))/float64(q.MaxQ) {
		t.Fatalf("weight sum %v, want %v", res.WeightSum(), wsum)
	}
	for i := range want {
		if d := math.Abs(mean[i] - want[i]/wsum); d > tol {
			t.Fatalf("mean[%d]=%v, float64 reference %v (diff %g > %g)", i, mean[i], want[i]/wsum, d, tol)
		}
	}
}

// TestStageTimeoutTicks: a stage never waits forever. With StageTicks = 3
// a stage missing one client ends on the third tick; a complete stage ends
// on the next tick.
func TestStageTimeoutTicks(t *testing.T) {
	cfg := testConfig(6, 5, 4, 2)
	cfg.StageTicks = 3
	r := newRound(t, cfg, 13)
	r.dropAt[5] = StageShareKeys // silent from round 1 on
	r.step(nil)
	out, advanced, err := r.server.Tick()
	if err != nil || !advanced {
		t.Fatalf("all adverts in: advanced=%v err=%v", advanced, err)
	}
	r.step(out)
	for i := 1; i <= 3; i++ {
		out, advanced, err = r.server.Tick()
		if err != nil {
			t.Fatal(err)
		}
		if advanced != (i == 3) {
			t.Fatalf("tick %d: advanced=%v, pending %v", i, advanced, r.server.Pending())
		}
	}
	for r.server.Stage() < StageDone {
		r.step(out)
		if out, _, err = r.server.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := r.server.Result()
	if err != nil {
		t.Fatal(err)
	}
	r.checkExact(res, r.liveAfter(StageMaskedInputCollection))
	if out, advanced, err := r.server.Tick(); out != nil || advanced || err != nil {
		t.Fatal("Tick after the end did something")
	}
}

// TestUnmaskingDetectsBadShare: a client that reveals a wrong share (here
// its own b share, corrupted before unmasking) cannot make the server
// output a wrong sum: with more than t shares the extra ones must lie on
// the interpolated polynomial, so the round aborts with ErrInconsistent.
func TestUnmaskingDetectsBadShare(t *testing.T) {
	r := newRound(t, testConfig(6, 5, 4, 3), 14)
	var out []Outbound
	for r.server.Stage() < StageUnmasking {
		r.step(out)
		var err error
		if out, err = r.server.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	r.clients[2].ownB[3] ^= 1
	r.step(out)
	_, err := r.server.Advance()
	if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrInconsistent) {
		t.Fatalf("advance: %v, want ErrAborted wrapping ErrInconsistent", err)
	}
}

// TestServerRelaysInnerSignaturesUnchecked: the server does not verify the
// protocol's signatures (package doc, "Signatures"); the clients that rely on
// them do. A device that signs its advert or its consistency signature with
// garbage gets it accepted by the server, and every neighbour that checks it
// refuses with ErrBadSignature: such a device can disrupt the round (as it
// could with bad shares) but cannot make a client trust a forged message.
func TestServerRelaysInnerSignaturesUnchecked(t *testing.T) {
	const forger = 3
	for _, stage := range []Stage{StageAdvertiseKeys, StageConsistencyCheck} {
		t.Run(stage.String(), func(t *testing.T) {
			r := newRound(t, testConfig(6, 5, 4, 2), 11)
			forged := 0
			r.forge = func(s Stage, from uint32, msg []byte) []byte {
				if s != stage || from != forger {
					return msg
				}
				forged++
				msg = bytes.Clone(msg)
				msg[len(msg)-1] ^= 1 // both messages end with the signature
				return msg
			}
			_, err := r.run()
			if forged != 1 {
				t.Fatalf("forged %d messages, want 1", forged)
			}
			refusing := StageShareKeys
			if stage == StageConsistencyCheck {
				refusing = StageUnmasking
			}
			errs := r.clientErrs[refusing]
			if len(errs) != 5 {
				t.Fatalf("client refusals %v, want all 5 neighbours of %d in %v", r.clientErrs, forger, refusing)
			}
			for _, e := range errs {
				if !errors.Is(e, ErrBadSignature) {
					t.Fatalf("refusal %v, want ErrBadSignature", e)
				}
			}
			// Every neighbour refused, so too few remain: the round aborts
			// and reveals nothing.
			if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrTooFew) {
				t.Fatalf("round: %v, want an abort with too few clients", err)
			}
			if _, err := r.server.Result(); !errors.Is(err, ErrAborted) {
				t.Fatalf("Result after abort: %v", err)
			}
		})
	}
}
