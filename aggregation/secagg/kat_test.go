package secagg

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/ecdh"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countingSeed() [32]byte {
	var s [32]byte
	for i := range s {
		s[i] = byte(i)
	}
	return s
}

// TestPRGKnownAnswer pins the mask PRG: AES-256-CTR keyed by the whole
// seed, initial counter block = domain || 0^64. The expected bytes were
// computed once with this implementation and cross-checked below against
// AES-256 applied block by block to the counter blocks.
func TestPRGKnownAnswer(t *testing.T) {
	seed := countingSeed()
	cases := []struct {
		d    domain
		want string // first 48 keystream bytes
	}{
		{domainSelfMask, kat.selfMask},
		{domainPairMask, kat.pairMask},
		{domainGraph, kat.graph},
	}
	block, err := aes.NewCipher(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		acc := make([]uint32, 12)
		applyMask(acc, seed, tc.d, +1)
		got := make([]byte, 0, 48)
		for _, v := range acc {
			got = binary.LittleEndian.AppendUint32(got, v)
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("domain %q: keystream %x, want %s", tc.d[:], got, tc.want)
		}
		// Independent construction: E_seed(domain || counter).
		ref := make([]byte, 48)
		for i := 0; i < 3; i++ {
			var ctr [16]byte
			copy(ctr[:8], tc.d[:])
			binary.BigEndian.PutUint64(ctr[8:], uint64(i))
			block.Encrypt(ref[16*i:], ctr[:])
		}
		if !bytes.Equal(got, ref) {
			t.Errorf("domain %q: keystream differs from AES-256 of the counter blocks", tc.d[:])
		}
		applyMask(acc, seed, tc.d, -1)
		for i, v := range acc {
			if v != 0 {
				t.Fatalf("subtracting the mask left %d at %d", v, i)
			}
		}
	}
	if kat.selfMask == kat.pairMask {
		t.Fatal("domains do not separate the streams")
	}
}

// TestPRGLongStream: masks longer than one expansion chunk continue the
// same keystream (no restart at chunk boundaries).
func TestPRGLongStream(t *testing.T) {
	seed := countingSeed()
	long := make([]uint32, 3*maskChunk+5)
	applyMask(long, seed, domainSelfMask, +1)
	p := newPRG(seed, domainSelfMask)
	buf := make([]byte, 4*len(long))
	p.stream.XORKeyStream(buf, buf)
	for i, v := range long {
		if v != binary.LittleEndian.Uint32(buf[4*i:]) {
			t.Fatalf("mask word %d differs from the keystream", i)
		}
	}
}

// TestKDFKnownAnswer: X25519 on the RFC 7748 section 6.1 keys, then
// HKDF-SHA256 bound to purpose, round and the unordered pair.
func TestKDFKnownAnswer(t *testing.T) {
	alice, err := ecdh.X25519().NewPrivateKey(mustHex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := ecdh.X25519().NewPrivateKey(mustHex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := agree(alice, [32]byte(bob.PublicKey().Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(ss) != "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742" {
		t.Fatalf("X25519 shared secret %x differs from RFC 7748", ss)
	}
	share := kdf(ss, purposeShareKey, 7, 1, 2)
	pair := kdf(ss, purposePairSeed, 7, 2, 1)
	if hex.EncodeToString(share[:]) != kat.shareKey || hex.EncodeToString(pair[:]) != kat.pairSeed {
		t.Fatalf("share key %x want %s; pair seed %x want %s", share, kat.shareKey, pair, kat.pairSeed)
	}
	if kdf(ss, purposeShareKey, 8, 1, 2) == share || kdf(ss, purposeShareKey, 7, 1, 3) == share {
		t.Fatal("kdf ignores the round or the pair")
	}
}

// TestShareEncryptionKnownAnswer: AES-256-GCM with fixed key and nonce over
// a fixed share plaintext; associated data = domain || round || from || to.
func TestShareEncryptionKnownAnswer(t *testing.T) {
	key := countingSeed()
	var nonce [nonceLen]byte
	for i := range nonce {
		nonce[i] = byte(0xA0 + i)
	}
	plain := make([]byte, sharePlainLen)
	for i := range plain {
		plain[i] = byte(3 * i)
	}
	ct := sealShare(key, nonce, 7, 1, 2, plain)
	if len(ct) != ShareCiphertextLen {
		t.Fatalf("ciphertext of %d bytes, want %d", len(ct), ShareCiphertextLen)
	}
	if hex.EncodeToString(ct) != kat.shareCiphertext {
		t.Fatalf("ciphertext %x\nwant       %s", ct, kat.shareCiphertext)
	}
	got, err := openShare(key, 7, 1, 2, ct)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	flipped := bytes.Clone(ct)
	flipped[nonceLen+20] ^= 1
	truncated := ct[:len(ct)-1]
	cases := []struct {
		name     string
		round    uint64
		from, to uint32
		ct       []byte
		key      [32]byte
	}{
		{"tampered ciphertext", 7, 1, 2, flipped, key},
		{"truncated", 7, 1, 2, truncated, key},
		{"other round", 8, 1, 2, ct, key},
		{"reversed direction", 7, 2, 1, ct, key},
		{"other receiver", 7, 1, 3, ct, key},
		{"other key", 7, 1, 2, ct, [32]byte{1}},
	}
	for _, tc := range cases {
		if _, err := openShare(tc.key, tc.round, tc.from, tc.to, tc.ct); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err=%v, want ErrDecrypt", tc.name, err)
		}
	}
}

// kat holds the known answers, computed once and written down.
var kat = struct {
	selfMask, pairMask, graph string
	shareKey, pairSeed        string
	shareCiphertext           string
}{
	selfMask:        "d116de4635088bf86f45e16bc5b51914d6e341c2e950a5638099ff3e2288273fd057f3c5944d9be040859cd1441d60a8",
	pairMask:        "75c7b7c5dc3556a7f3de1f52955a3ad395bd2a9d1482e442002efce553514b7bd283e68d44dbd90c587fce587592ef05",
	graph:           "d341849e50e5e654fd92b68438f3334e090e01e35f1497d7cbec4ee0387bf0b5eb9e62088093fcb98cdc26a9f8a53639",
	shareKey:        "79c01c670c9efc030c98bad37bb50b482fdf5cc1782b8516fb828d74d8536565",
	pairSeed:        "ad7822cd9dd1148585883b10b4bb67ca7bd578dc58d80641ae3b29bcf3ac6527",
	shareCiphertext: "a0a1a2a3a4a5a6a7a8a9aaabe61b7a2449c410aa7a7e99f2235deaf3409f6f29ae880029d44568d72bfc2f5cb2152196c34d214827e77a498dfd0974d788d0d1fe4fb8dbe9f5a5ef10c73f0d747f43a6fc6a36352c3921f96b2926573df85d5d393e9b7f7f2c3466b0014fdeecb50fe84c4422d0",
}

// TestAddSubLEAgainstNaive: the unrolled loops equal the obvious ones.
func TestAddSubLEAgainstNaive(t *testing.T) {
	for n := 0; n < 40; n++ {
		b := make([]byte, 4*n)
		for i := range b {
			b[i] = byte(i*37 + n)
		}
		acc := make([]uint32, n)
		ref := make([]uint32, n)
		for i := range acc {
			acc[i], ref[i] = uint32(i*0x01010101), uint32(i*0x01010101)
		}
		addLE(acc, b)
		for i := range ref {
			ref[i] += binary.LittleEndian.Uint32(b[4*i:])
		}
		if !slices.Equal(acc, ref) {
			t.Fatalf("addLE n=%d", n)
		}
		subLE(acc, b)
		subLE(acc, b)
		for i := range ref {
			ref[i] -= 2 * binary.LittleEndian.Uint32(b[4*i:])
		}
		if !slices.Equal(acc, ref) {
			t.Fatalf("subLE n=%d", n)
		}
	}
}

// TestLowOrderTable: every listed point (with either top bit) fails X25519,
// and random keys are not flagged; the server rejects adverts with them.
func TestLowOrderTable(t *testing.T) {
	seed := countingSeed()
	priv, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lowOrderPoints {
		for _, hi := range []byte{0, 0x80} {
			k := p
			k[31] |= hi
			if _, err := agree(priv, k); err == nil {
				t.Fatalf("%x: key agreement succeeded", k)
			}
			if !lowOrder(k) {
				t.Fatalf("%x not flagged", k)
			}
		}
	}
	r := seededRand(77)
	for i := 0; i < 200; i++ {
		var k [32]byte
		r.Read(k[:])
		_, err := agree(priv, k)
		if lowOrder(k) != (err != nil) {
			t.Fatalf("%x: lowOrder=%v, key agreement error %v", k, lowOrder(k), err)
		}
	}
	cfg := testConfig(4, 3, 3, 1)
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &AdvertiseKeys{Round: cfg.Round, From: 1, CPK: lowOrderPoints[2], SPK: [32]byte{9}}
	sig, err := deviceKey(1).Sign(nil, signedBytes(m.body()), crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	m.Sig = [64]byte(sig)
	if err := srv.Receive(1, m.Marshal()); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("advert with a low-order key: %v, want ErrInconsistent", err)
	}
}
