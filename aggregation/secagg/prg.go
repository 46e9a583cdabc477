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

func newPRG(seed [32]byte, d domain) *prg {
	block, err := aes.NewCipher(seed[:])
	if err != nil {
		panic("secagg: aes-256 with a 32-byte key: " + err.Error()) // cannot happen
	}
	var iv [aes.BlockSize]byte
	copy(iv[:8], d[:])
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

const maskChunk = 8192 // uint32s expanded per keystream call

var zeroChunk [4 * maskChunk]byte // read-only source for keystream expansion

// keystreamPool recycles the expansion buffers: a client expands Degree+1
// masks per round and the server one per survivor.
var keystreamPool = sync.Pool{New: func() any { return new([4 * maskChunk]byte) }}

// applyMask adds (sign > 0) or subtracts (sign < 0) the mask
// PRG(seed, d) read as little-endian uint32s to acc, mod 2^32. The modulus
// is a power of two, so the mask is exactly uniform over Z_{2^32}^len(acc).
func applyMask(acc []uint32, seed [32]byte, d domain, sign int) {
	p := newPRG(seed, d)
	ksp := keystreamPool.Get().(*[4 * maskChunk]byte)
	defer keystreamPool.Put(ksp)
	ks := ksp[:]
	for off := 0; off < len(acc); off += maskChunk {
		part := acc[off:min(off+maskChunk, len(acc))]
		buf := ks[:4*len(part)]
		p.stream.XORKeyStream(buf, zeroChunk[:len(buf)])
		if sign > 0 {
			addLE(part, buf)
		} else {
			subLE(part, buf)
		}
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
