package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
)

// domain separates the uses of a PRG seed. It fills the upper half of the
// AES-CTR initial counter block; the lower 64 bits count blocks from zero,
// so streams of different domains under one key never overlap (they would
// need 2^64 blocks).
type domain [8]byte

var (
	domainSelfMask = domain{'s', 'e', 'l', 'f', 'm', 'a', 's', 'k'}
	domainPairMask = domain{'p', 'a', 'i', 'r', 'm', 'a', 's', 'k'}
	domainGraph    = domain{'n', 'b', 'r', 'g', 'r', 'a', 'p', 'h'}
)

// prg is AES-256-CTR keyed by the full 256-bit seed: a keystream of
// uniformly random bytes (under the PRF assumption on AES).
type prg struct {
	stream cipher.Stream
	zero   [8]byte
}

func newPRG(seed [32]byte, d domain) *prg { return newPRGAt(seed, d, 0) }

// newPRGAt is newPRG positioned at keystream block blk (byte 16*blk).
func newPRGAt(seed [32]byte, d domain, blk uint64) *prg {
	block, err := aes.NewCipher(seed[:])
	if err != nil {
		panic("secagg: aes-256 with a 32-byte key: " + err.Error()) // cannot happen
	}
	var iv [aes.BlockSize]byte
	copy(iv[:8], d[:])
	binary.BigEndian.PutUint64(iv[8:], blk)
	return &prg{stream: cipher.NewCTR(block, iv[:])}
}

func (p *prg) uint64() uint64 {
	var b [8]byte
	p.stream.XORKeyStream(b[:], p.zero[:])
	return binary.LittleEndian.Uint64(b[:])
}

// uniform returns an exactly uniform integer in [0, n), n > 0, by rejection.
func (p *prg) uniform(n uint64) uint64 {
	limit := -n % n // 2^64 mod n: values below it are rejected
	for {
		v := p.uint64()
		if v >= limit {
			return v % n
		}
	}
}

// maskChunk is the number of uint32s expanded per keystream call (8 KB).
// Sizes from 4 to 32 KB measured alike (BenchmarkApplyMask*): the AES-CTR
// expansion dominates.
const maskChunk = 2048

var zeroChunk [4 * maskChunk]byte // read-only source for keystream expansion

type maskBufs [4][4 * maskChunk]byte

// maskBufPool recycles the expansion buffers: a client expands Degree+1
// masks per round and the server one per survivor.
var maskBufPool = sync.Pool{New: func() any { return new(maskBufs) }}

// maskJob is one mask to apply: PRG(seed, d) read as little-endian uint32s,
// subtracted if neg, added otherwise.
type maskJob struct {
	seed [32]byte
	d    domain
	neg  bool
}

// applyMask adds (sign > 0) or subtracts (sign < 0) the mask
// PRG(seed, d) read as little-endian uint32s to acc, mod 2^32. The modulus
// is a power of two, so the mask is exactly uniform over Z_{2^32}^len(acc).
func applyMask(acc []uint32, seed [32]byte, d domain, sign int) {
	applyMasks(acc, []maskJob{{seed: seed, d: d, neg: sign < 0}})
}

// applyMasks applies the mask of every job to acc. The result is that of
// applyMask for each job in turn (addition mod 2^32 commutes), but masks of
// the same sign are expanded four at a time, chunk by chunk, and folded into
// acc in one pass: acc is read and written once per four masks, not once per
// mask (about 10% less CPU per mask than one at a time; the AES-256-CTR
// expansion, roughly 5 GB/s here, is nearly all of the rest). Where the CPU
// has VAES, applyMasksVAES computes the same result about 2.4x faster.
func applyMasks(acc []uint32, jobs []maskJob) {
	if useVAES && len(jobs) > 0 {
		applyMasksVAES(acc, jobs)
		return
	}
	bufs := maskBufPool.Get().(*maskBufs)
	defer maskBufPool.Put(bufs)
	for _, neg := range [2]bool{false, true} {
		var group [4]cipher.Stream
		k := 0
		for i := range jobs {
			if jobs[i].neg != neg {
				continue
			}
			group[k] = newPRG(jobs[i].seed, jobs[i].d).stream
			if k++; k == len(group) {
				applyGroup(acc, group[:k], neg, bufs)
				k = 0
			}
		}
		if k > 0 {
			applyGroup(acc, group[:k], neg, bufs)
		}
	}
}

// applyGroup adds (or, if neg, subtracts) the keystreams of up to four
// streams to acc.
func applyGroup(acc []uint32, streams []cipher.Stream, neg bool, bufs *maskBufs) {
	for off := 0; off < len(acc); off += maskChunk {
		part := acc[off:min(off+maskChunk, len(acc))]
		n := 4 * len(part)
		for j, st := range streams {
			st.XORKeyStream(bufs[j][:n], zeroChunk[:n])
		}
		switch {
		case len(streams) == 4 && neg:
			sub4LE(part, bufs[0][:n], bufs[1][:n], bufs[2][:n], bufs[3][:n])
		case len(streams) == 4:
			add4LE(part, bufs[0][:n], bufs[1][:n], bufs[2][:n], bufs[3][:n])
		default:
			for j := range streams {
				if neg {
					subLE(part, bufs[j][:n])
				} else {
					addLE(part, bufs[j][:n])
				}
			}
		}
	}
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// add4LE adds the little-endian uint32s of b0..b3 (each at least
// 4*len(acc) bytes) to acc, four coordinates at a time.
func add4LE(acc []uint32, b0, b1, b2, b3 []byte) {
	n := len(acc)
	b0, b1, b2, b3 = b0[:4*n], b1[:4*n], b2[:4*n], b3[:4*n]
	i := 0
	for ; i+4 <= n; i += 4 {
		a := (*[4]uint32)(acc[i:])
		w0, w1, w2, w3 := (*[16]byte)(b0[4*i:]), (*[16]byte)(b1[4*i:]), (*[16]byte)(b2[4*i:]), (*[16]byte)(b3[4*i:])
		a[0] += le32(w0[0:]) + le32(w1[0:]) + le32(w2[0:]) + le32(w3[0:])
		a[1] += le32(w0[4:]) + le32(w1[4:]) + le32(w2[4:]) + le32(w3[4:])
		a[2] += le32(w0[8:]) + le32(w1[8:]) + le32(w2[8:]) + le32(w3[8:])
		a[3] += le32(w0[12:]) + le32(w1[12:]) + le32(w2[12:]) + le32(w3[12:])
	}
	for ; i < n; i++ {
		acc[i] += le32(b0[4*i:]) + le32(b1[4*i:]) + le32(b2[4*i:]) + le32(b3[4*i:])
	}
}

// sub4LE subtracts the little-endian uint32s of b0..b3 from acc.
func sub4LE(acc []uint32, b0, b1, b2, b3 []byte) {
	n := len(acc)
	b0, b1, b2, b3 = b0[:4*n], b1[:4*n], b2[:4*n], b3[:4*n]
	i := 0
	for ; i+4 <= n; i += 4 {
		a := (*[4]uint32)(acc[i:])
		w0, w1, w2, w3 := (*[16]byte)(b0[4*i:]), (*[16]byte)(b1[4*i:]), (*[16]byte)(b2[4*i:]), (*[16]byte)(b3[4*i:])
		a[0] -= le32(w0[0:]) + le32(w1[0:]) + le32(w2[0:]) + le32(w3[0:])
		a[1] -= le32(w0[4:]) + le32(w1[4:]) + le32(w2[4:]) + le32(w3[4:])
		a[2] -= le32(w0[8:]) + le32(w1[8:]) + le32(w2[8:]) + le32(w3[8:])
		a[3] -= le32(w0[12:]) + le32(w1[12:]) + le32(w2[12:]) + le32(w3[12:])
	}
	for ; i < n; i++ {
		acc[i] -= le32(b0[4*i:]) + le32(b1[4*i:]) + le32(b2[4*i:]) + le32(b3[4*i:])
	}
}

// addLE adds the little-endian uint32s in b to acc (len(b) >= 4*len(acc)),
// eight at a time so the compiler drops the bounds checks.
func addLE(acc []uint32, b []byte) {
	b = b[:4*len(acc)]
	i := 0
	for ; i+8 <= len(acc); i += 8 {
		w := (*[32]byte)(b[4*i:])
		a := (*[8]uint32)(acc[i:])
		a[0] += binary.LittleEndian.Uint32(w[0:])
		a[1] += binary.LittleEndian.Uint32(w[4:])
		a[2] += binary.LittleEndian.Uint32(w[8:])
		a[3] += binary.LittleEndian.Uint32(w[12:])
		a[4] += binary.LittleEndian.Uint32(w[16:])
		a[5] += binary.LittleEndian.Uint32(w[20:])
		a[6] += binary.LittleEndian.Uint32(w[24:])
		a[7] += binary.LittleEndian.Uint32(w[28:])
	}
	for ; i < len(acc); i++ {
		acc[i] += binary.LittleEndian.Uint32(b[4*i:])
	}
}

// subLE subtracts the little-endian uint32s in b from acc.
func subLE(acc []uint32, b []byte) {
	b = b[:4*len(acc)]
	i := 0
	for ; i+8 <= len(acc); i += 8 {
		w := (*[32]byte)(b[4*i:])
		a := (*[8]uint32)(acc[i:])
		a[0] -= binary.LittleEndian.Uint32(w[0:])
		a[1] -= binary.LittleEndian.Uint32(w[4:])
		a[2] -= binary.LittleEndian.Uint32(w[8:])
		a[3] -= binary.LittleEndian.Uint32(w[12:])
		a[4] -= binary.LittleEndian.Uint32(w[16:])
		a[5] -= binary.LittleEndian.Uint32(w[20:])
		a[6] -= binary.LittleEndian.Uint32(w[24:])
		a[7] -= binary.LittleEndian.Uint32(w[28:])
	}
	for ; i < len(acc); i++ {
		acc[i] -= binary.LittleEndian.Uint32(b[4*i:])
	}
}

// kdf derives a 32-byte key from an X25519 shared secret, bound to a
// purpose, the round and the unordered pair of clients.
func kdf(secret []byte, purpose string, round uint64, a, b uint32) [32]byte {
	lo, hi := min(a, b), max(a, b)
	info := make([]byte, 0, len(purpose)+16)
	info = append(info, purpose...)
	info = binary.LittleEndian.AppendUint64(info, round)
	info = binary.LittleEndian.AppendUint32(info, lo)
	info = binary.LittleEndian.AppendUint32(info, hi)
	k, err := hkdf.Key(sha256.New, secret, nil, string(info), 32)
	if err != nil {
		panic("secagg: hkdf of 32 bytes: " + err.Error()) // cannot happen
	}
	return [32]byte(k)
}

const (
	purposeShareKey = "fedge/secagg/v1 share-key"
	purposePairSeed = "fedge/secagg/v1 pair-seed"
	shareAD         = "fedge/secagg/v1 share"
)

// agree runs X25519 between priv and the 32-byte public key pub.
func agree(priv *ecdh.PrivateKey, pub [32]byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return nil, fmt.Errorf("x25519 public key: %w", err)
	}
	ss, err := priv.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("x25519: %w", err)
	}
	return ss, nil
}

// Encrypted shares: nonce (12) || AES-256-GCM(plaintext) (sharePlainLen+16).
const (
	nonceLen      = 12
	shareYLen     = 40 // shamir.ShareLen(32)
	sharePlainLen = 8 + 2*shareYLen
	// ShareCiphertextLen is the size of one encrypted share pair.
	ShareCiphertextLen = nonceLen + sharePlainLen + 16
)

func shareAEAD(key [32]byte) cipher.AEAD {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic("secagg: aes-256: " + err.Error())
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("secagg: gcm: " + err.Error())
	}
	return g
}

func shareAssociatedData(round uint64, from, to uint32) []byte {
	ad := make([]byte, 0, len(shareAD)+16)
	ad = append(ad, shareAD...)
	ad = binary.LittleEndian.AppendUint64(ad, round)
	ad = binary.LittleEndian.AppendUint32(ad, from)
	return binary.LittleEndian.AppendUint32(ad, to)
}

// sealShare encrypts the share plaintext from -> to; the associated data
// binds round, sender and receiver, so a ciphertext moved to another pair,
// direction or round fails to open.
func sealShare(key [32]byte, nonce [nonceLen]byte, round uint64, from, to uint32, plain []byte) []byte {
	out := make([]byte, nonceLen, ShareCiphertextLen)
	copy(out, nonce[:])
	return shareAEAD(key).Seal(out, nonce[:], plain, shareAssociatedData(round, from, to))
}

func openShare(key [32]byte, round uint64, from, to uint32, ct []byte) ([]byte, error) {
	if len(ct) != ShareCiphertextLen {
		return nil, fmt.Errorf("share ciphertext of %d bytes: %w", len(ct), ErrDecrypt)
	}
	plain, err := shareAEAD(key).Open(nil, ct[:nonceLen], ct[nonceLen:], shareAssociatedData(round, from, to))
	if err != nil {
		return nil, fmt.Errorf("share %d->%d: %w", from, to, ErrDecrypt)
	}
	return plain, nil
}
