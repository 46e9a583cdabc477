package secagg

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/fedge-dev/fedge/aggregation/secagg/shamir"
)

// finish reconstructs b_v of every survivor and s_sk of every client that
// dropped after sharing, then removes all their masks from the sum in one
// batch (applyMasks).
func (s *Server) finish() error {
	if err := s.enough("answered the unmask request", count(s.got)); err != nil {
		return err
	}
	jobs := make([]maskJob, 0, count(s.u3))
	for v := range s.cfg.N {
		switch {
		case s.u3[v]:
			seed, err := s.reconstruct(uint32(v), KindSeed)
			if err != nil {
				return err
			}
			jobs = append(jobs, maskJob{seed: [32]byte(seed), d: domainSelfMask, neg: true})
		case s.u2[v]:
			var err error
			if jobs, err = s.pairMaskJobs(jobs, uint32(v)); err != nil {
				return err
			}
		}
	}
	applyMasks(s.acc, jobs)
	r := &Result{Sum: s.acc, q: s.cfg.Quantizer(), dim: s.cfg.Dim, weighted: s.cfg.MaxWeight > 0}
	for u, in := range s.u3 {
		if in {
			r.Survivors = append(r.Survivors, uint32(u))
		}
	}
	s.result, s.acc = r, nil
	return nil
}

func (s *Server) reconstruct(v uint32, kind ShareKind) ([]byte, error) {
	secret, err := shamir.Combine(s.revealed[v], s.cfg.Threshold, 32)
	if err != nil {
		if errors.Is(err, shamir.ErrTooFewShares) {
			err = fmt.Errorf("%w: %w", ErrTooFew, err)
		} else {
			err = fmt.Errorf("%w: %w", ErrInconsistent, err)
		}
		return nil, fmt.Errorf("reconstruct secret %d of client %d: %w", kind, v, err)
	}
	return secret, nil
}

// pairMaskJobs appends the jobs that undo the pairwise masks the surviving
// neighbours of the dropped client v added for it.
func (s *Server) pairMaskJobs(jobs []maskJob, v uint32) ([]maskJob, error) {
	var live []uint32
	for _, w := range s.nbrs[v] {
		if s.u3[w] {
			live = append(live, w)
		}
	}
	if len(live) == 0 {
		return jobs, nil
	}
	raw, err := s.reconstruct(v, KindKey)
	if err != nil {
		return nil, err
	}
	sk, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), s.adverts[v].SPK[:]) {
		return nil, fmt.Errorf("reconstructed key of client %d does not match its advert: %w", v, ErrInconsistent)
	}
	for _, w := range live {
		ss, err := agree(sk, s.adverts[w].SPK)
		if err != nil {
			return nil, fmt.Errorf("key agreement %d-%d: %w", v, w, err)
		}
		// w added +PRG when w < v, so subtract it then; add it back otherwise.
		jobs = append(jobs, maskJob{seed: kdf(ss, purposePairSeed, s.cfg.Round, v, w), d: domainPairMask, neg: w < v})
	}
	return jobs, nil
}

// Result returns the exact sum once the round is Done.
func (s *Server) Result() (*Result, error) {
	switch s.stage {
	case StageDone:
		return s.result, nil
	case StageAborted:
		return nil, fmt.Errorf("result: %w: %w", ErrAborted, s.err)
	}
	return nil, fmt.Errorf("result in stage %v: %w", s.stage, ErrWrongStage)
}

// lowOrderPoints are the encodings (top bit cleared, as X25519 ignores it)
// of the u-coordinates of small-order points on Curve25519 and its twist,
// including the non-canonical p and p+1 (the list libsodium rejects): a key
// agreement with any of them gives zero whatever the private scalar.
var lowOrderPoints = func() [][keyLen]byte {
	var out [][keyLen]byte
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			panic(err)
		}
		out = append(out, [keyLen]byte(b))
	}
	return out
}()

// lowOrder reports whether k is unusable for X25519 key agreement, without
// the cost of a scalar multiplication.
func lowOrder(k [keyLen]byte) bool {
	k[31] &= 0x7f
	return slices.Contains(lowOrderPoints, k)
}
