package secagg

import (
	"crypto/cipher"
	"encoding/binary"
)

// The VAES path computes exactly the masks of the portable one
// (AES-256-CTR keyed by the seed, initial counter block domain || 0^64, read
// as little-endian uint32s): the standard library's AES-CTR runs one
// 128-bit block per AES instruction, while VAES runs two, and the keystream
// is folded into the sum in registers instead of through a buffer. On the
// 2-core AMD EPYC we measure on this halves the server's unmasking time
// (BenchmarkApplyMask*, BenchmarkSecAggServer). TestVAESMatchesPortable
// checks it against crypto/cipher byte for byte.

// useVAES selects the VAES path where the CPU has it (tests turn it off to
// exercise the portable path on the same machine).
var useVAES = haveVAES

const (
	// vaesStep is the uint32s one kernel iteration covers (16 AES blocks).
	vaesStep = 64
	// vaesChunk is the slice of the sum that every mask is folded into
	// before moving on (32 KB: it stays in the core's L1/L2 cache while
	// all masks pass over it, whatever the model size).
	vaesChunk = 8192
)

// vaesKey is an AES-256 key schedule with each round key repeated for the
// two 128-bit lanes of a YMM register.
type vaesKey [15][32]byte

func newVAESKey(seed [32]byte) *vaesKey {
	var rk [15][16]byte
	expandKey256AESNI(&seed, &rk)
	k := new(vaesKey)
	for i := range rk {
		copy(k[i][:16], rk[i][:])
		copy(k[i][16:], rk[i][:])
	}
	return k
}

// applyMasksVAES is applyMasks on the VAES kernel: the sum is walked in
// vaesChunk slices, each receiving every mask, so acc moves through memory
// once whatever the number of masks. The last len(acc) mod 64 coordinates
// go through the portable path (applyGroup), its PRG started at the right
// block.
func applyMasksVAES(acc []uint32, jobs []maskJob) {
	keys := make([]*vaesKey, len(jobs))
	for i := range jobs {
		keys[i] = newVAESKey(jobs[i].seed)
	}
	bulk := len(acc) / vaesStep * vaesStep
	var ctr [32]byte
	for off := 0; off < bulk; off += vaesChunk {
		end := min(off+vaesChunk, bulk)
		blk := uint64(off / 4) // 4 uint32s per AES block
		for i := range jobs {
			copy(ctr[0:8], jobs[i].d[:])
			binary.LittleEndian.PutUint64(ctr[8:16], blk)
			copy(ctr[16:24], jobs[i].d[:])
			binary.LittleEndian.PutUint64(ctr[24:32], blk+1)
			ctrMaskVAES(keys[i], &ctr, &acc[off], (end-off)/vaesStep, jobs[i].neg)
		}
	}
	if bulk == len(acc) {
		return
	}
	bufs := maskBufPool.Get().(*maskBufs)
	defer maskBufPool.Put(bufs)
	for i := range jobs {
		st := newPRGAt(jobs[i].seed, jobs[i].d, uint64(bulk/4)).stream
		applyGroup(acc[bulk:], []cipher.Stream{st}, jobs[i].neg, bufs)
	}
}
