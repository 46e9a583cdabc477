package secagg

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/fedge-dev/fedge/aggregation/secagg/shamir"
)

// Client is one device's side of a round. Each method handles one stage and
// returns the message to send to the server. A method that fails leaves the
// client in its stage (the caller may drop out); a client never reveals a
// secret the protocol forbids, whatever the server sends.
type Client struct {
	cfg    Config
	id     uint32
	signer crypto.Signer
	rand   io.Reader
	nbrs   []uint32 // graph neighbours, sorted
	stage  Stage

	cSK, sSK *ecdh.PrivateKey
	peers    map[uint32]*peer // neighbours whose adverts arrived (U1 ∩ N(u))
	seed     [32]byte         // b_u
	ownS     []byte           // own share of s_sk
	ownB     []byte           // own share of b_u

	consistency    *ConsistencyRequest
	consistencyRaw []byte
	revealed       map[uint32]ShareKind
}

type peer struct {
	cPK, sPK [keyLen]byte
	shareKey [32]byte                  // AES-GCM key for shares between us, derived once
	ct       *[ShareCiphertextLen]byte // its shares for us (nil until forwarded)
}

// NewClient creates client id of the round described by cfg. signer must be
// the device's Ed25519 key (its public key is cfg.DeviceKeys[id]); rand
// supplies all randomness (nil means crypto/rand).
func NewClient(cfg Config, id uint32, signer crypto.Signer, rand io.Reader) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new client %d: %w", id, err)
	}
	if int(id) >= cfg.N {
		return nil, fmt.Errorf("client id %d of %d: %w", id, cfg.N, ErrConfig)
	}
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok || !pub.Equal(cfg.DeviceKeys[id]) {
		return nil, fmt.Errorf("client %d: signer is not the enrolled Ed25519 key: %w", id, ErrConfig)
	}
	if rand == nil {
		rand = cryptorand.Reader
	}
	return &Client{cfg: cfg, id: id, signer: signer, rand: rand, nbrs: cfg.NeighboursOf(id),
		peers: map[uint32]*peer{}, revealed: map[uint32]ShareKind{}}, nil
}

// Stage is the stage whose server message the client expects next.
func (c *Client) Stage() Stage { return c.stage }

func (c *Client) expect(s Stage, round uint64) error {
	if c.stage != s {
		return fmt.Errorf("client %d in stage %v got a %v message: %w", c.id, c.stage, s, ErrWrongStage)
	}
	if round != c.cfg.Round {
		return fmt.Errorf("client %d: round %d, want %d: %w", c.id, round, c.cfg.Round, ErrWrongRound)
	}
	return nil
}

func (c *Client) sign(body []byte) ([sigLen]byte, error) {
	sig, err := c.signer.Sign(nil, signedBytes(body), crypto.Hash(0))
	if err != nil || len(sig) != sigLen {
		return [sigLen]byte{}, fmt.Errorf("client %d: sign: %v: %w", c.id, err, ErrBadSignature)
	}
	return [sigLen]byte(sig), nil
}

func (c *Client) isNeighbour(v uint32) bool {
	_, ok := slices.BinarySearch(c.nbrs, v)
	return ok
}

func (c *Client) newKey() (*ecdh.PrivateKey, error) {
	var b [32]byte
	if _, err := io.ReadFull(c.rand, b[:]); err != nil {
		return nil, fmt.Errorf("client %d: read randomness: %w", c.id, err)
	}
	return ecdh.X25519().NewPrivateKey(b[:])
}

// AdvertiseKeys (round 0) generates the two key pairs and returns the signed advert.
func (c *Client) AdvertiseKeys() ([]byte, error) {
	if err := c.expect(StageAdvertiseKeys, c.cfg.Round); err != nil {
		return nil, err
	}
	var err error
	if c.cSK, err = c.newKey(); err != nil {
		return nil, err
	}
	if c.sSK, err = c.newKey(); err != nil {
		return nil, err
	}
	m := &AdvertiseKeys{Round: c.cfg.Round, From: c.id,
		CPK: [keyLen]byte(c.cSK.PublicKey().Bytes()), SPK: [keyLen]byte(c.sSK.PublicKey().Bytes())}
	if m.Sig, err = c.sign(m.body()); err != nil {
		return nil, err
	}
	c.stage = StageShareKeys
	return m.Marshal(), nil
}

// ShareKeys (round 1) checks the neighbours' signed adverts, Shamir-shares
// s_sk and a fresh self-mask seed b_u among them and itself, and returns the
// shares encrypted for each neighbour.
func (c *Client) ShareKeys(msg []byte) ([]byte, error) {
	m, err := UnmarshalNeighbourKeys(msg)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", c.id, err)
	}
	if err := c.expect(StageShareKeys, m.Round); err != nil {
		return nil, err
	}
	peers := map[uint32]*peer{}
	keys := map[[keyLen]byte]bool{[keyLen]byte(c.cSK.PublicKey().Bytes()): true, [keyLen]byte(c.sSK.PublicKey().Bytes()): true}
	for i := range m.Keys {
		a := &m.Keys[i]
		if !c.isNeighbour(a.From) || peers[a.From] != nil {
			return nil, fmt.Errorf("client %d: advert of %d (not a neighbour or repeated): %w", c.id, a.From, ErrInconsistent)
		}
		if !a.Verify(c.cfg.DeviceKeys[a.From]) {
			return nil, fmt.Errorf("client %d: advert of %d: %w", c.id, a.From, ErrBadSignature)
		}
		if keys[a.CPK] || keys[a.SPK] || a.CPK == a.SPK {
			return nil, fmt.Errorf("client %d: advert of %d reuses a key: %w", c.id, a.From, ErrInconsistent)
		}
		keys[a.CPK], keys[a.SPK] = true, true
		peers[a.From] = &peer{cPK: a.CPK, sPK: a.SPK}
	}
	if len(peers)+1 < c.cfg.Threshold {
		return nil, fmt.Errorf("client %d: %d neighbours advertised, threshold %d: %w", c.id, len(peers), c.cfg.Threshold, ErrTooFew)
	}
	if _, err := io.ReadFull(c.rand, c.seed[:]); err != nil {
		return nil, fmt.Errorf("client %d: read randomness: %w", c.id, err)
	}
	holders := append(sortedKeys(peers), c.id)
	xs := make([]uint64, len(holders))
	for i, h := range holders {
		xs[i] = uint64(h) + 1
	}
	sShares, err := shamir.Split(c.sSK.Bytes(), xs, c.cfg.Threshold, c.rand)
	if err != nil {
		return nil, fmt.Errorf("client %d: share s_sk: %w", c.id, err)
	}
	bShares, err := shamir.Split(c.seed[:], xs, c.cfg.Threshold, c.rand)
	if err != nil {
		return nil, fmt.Errorf("client %d: share b: %w", c.id, err)
	}
	out := &ShareKeys{Round: c.cfg.Round, From: c.id, Shares: make([]EncryptedShare, len(holders)-1)}
	for i, v := range holders[:len(holders)-1] {
		ss, err := agree(c.cSK, peers[v].cPK)
		if err != nil {
			return nil, fmt.Errorf("client %d: key agreement with %d: %w", c.id, v, err)
		}
		var nonce [nonceLen]byte
		if _, err := io.ReadFull(c.rand, nonce[:]); err != nil {
			return nil, fmt.Errorf("client %d: read randomness: %w", c.id, err)
		}
		plain := sharePlaintext(c.id, v, sShares[i], bShares[i])
		key := kdf(ss, purposeShareKey, c.cfg.Round, c.id, v)
		peers[v].shareKey = key
		out.Shares[i] = EncryptedShare{Peer: v, Ciphertext: [ShareCiphertextLen]byte(sealShare(key, nonce, c.cfg.Round, c.id, v, plain))}
	}
	last := len(holders) - 1
	c.ownS, c.ownB = shamir.AppendShareY(nil, sShares[last]), shamir.AppendShareY(nil, bShares[last])
	if out.Sig, err = c.sign(out.body()); err != nil {
		return nil, err
	}
	c.peers = peers
	c.stage = StageMaskedInputCollection
	return out.Marshal(), nil
}

func sharePlaintext(from, to uint32, s, b shamir.Share) []byte {
	p := make([]byte, 0, sharePlainLen)
	p = binary.LittleEndian.AppendUint32(p, from)
	p = binary.LittleEndian.AppendUint32(p, to)
	p = shamir.AppendShareY(p, s)
	return shamir.AppendShareY(p, b)
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	ks := make([]uint32, 0, len(m)+1)
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// MaskedInput (round 2) stores the shares forwarded to the client and
// returns its encoded input (see Config.Encode) plus the self mask PRG(b_u)
// plus, for each neighbour v that shared keys, +PRG(s_uv) if u < v and
// -PRG(s_uv) if u > v, all mod 2^32.
func (c *Client) MaskedInput(msg []byte, values []float32, weight float64) ([]byte, error) {
	m, err := UnmarshalForwardedShares(msg)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", c.id, err)
	}
	if err := c.expect(StageMaskedInputCollection, m.Round); err != nil {
		return nil, err
	}
	y, err := c.cfg.Encode(values, weight)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", c.id, err)
	}
	got := map[uint32]*[ShareCiphertextLen]byte{}
	for i := range m.Shares {
		s := &m.Shares[i]
		if c.peers[s.Peer] == nil || got[s.Peer] != nil {
			return nil, fmt.Errorf("client %d: share from %d (unknown or repeated): %w", c.id, s.Peer, ErrInconsistent)
		}
		got[s.Peer] = &s.Ciphertext
	}
	if len(got)+1 < c.cfg.Threshold {
		return nil, fmt.Errorf("client %d: shares from %d neighbours, threshold %d: %w", c.id, len(got), c.cfg.Threshold, ErrTooFew)
	}
	jobs := make([]maskJob, 1, len(got)+1)
	jobs[0] = maskJob{seed: c.seed, d: domainSelfMask}
	for _, v := range sortedKeys(got) {
		ss, err := agree(c.sSK, c.peers[v].sPK)
		if err != nil {
			return nil, fmt.Errorf("client %d: key agreement with %d: %w", c.id, v, err)
		}
		jobs = append(jobs, maskJob{seed: kdf(ss, purposePairSeed, c.cfg.Round, c.id, v), d: domainPairMask, neg: c.id > v})
	}
	applyMasks(y, jobs)
	for i := range jobs {
		clear(jobs[i].seed[:]) // the pairwise seeds are secrets
	}
	for v, ct := range got {
		c.peers[v].ct = ct
	}
	c.stage = StageConsistencyCheck
	return (&MaskedInput{Round: c.cfg.Round, From: c.id, Y: y}).Marshal(), nil
}

// ConsistencyCheck (round 3) signs the announced survivor set U3 after
// checking that it includes the client, has at least Threshold members and
// lists no neighbour whose shares never reached the client.
func (c *Client) ConsistencyCheck(msg []byte) ([]byte, error) {
	m, err := UnmarshalConsistencyRequest(msg)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", c.id, err)
	}
	if err := c.expect(StageConsistencyCheck, m.Round); err != nil {
		return nil, err
	}
	if int(m.N) != c.cfg.N || !m.Has(c.id) {
		return nil, fmt.Errorf("client %d: survivor set over %d clients without us: %w", c.id, m.N, ErrInconsistent)
	}
	count := 0
	for i := uint32(0); i < m.N; i++ {
		if m.Has(i) {
			count++
		}
	}
	if count < c.cfg.Threshold {
		return nil, fmt.Errorf("client %d: %d survivors, threshold %d: %w", c.id, count, c.cfg.Threshold, ErrTooFew)
	}
	for _, v := range c.nbrs {
		if m.Has(v) && (c.peers[v] == nil || c.peers[v].ct == nil) {
			return nil, fmt.Errorf("client %d: neighbour %d listed as survivor but never shared: %w", c.id, v, ErrInconsistent)
		}
	}
	sig, err := c.sign(msg)
	if err != nil {
		return nil, err
	}
	c.consistency, c.consistencyRaw = m, bytes.Clone(msg)
	c.stage = StageUnmasking
	return (&ConsistencySig{Round: c.cfg.Round, From: c.id, Sig: sig}).Marshal(), nil
}

// Unmask (round 4) verifies the neighbours' consistency signatures and
// returns the requested shares: the b share of each surviving peer (and its
// own), the s_sk share of each peer that dropped after sharing keys. It
// refuses (ErrDoubleReveal) any request that, with what it revealed before,
// would give both shares of one peer, and any request that contradicts the
// survivor set it signed. A share whose ciphertext fails authentication is
// left out of the response. Repeated requests are answered again.
func (c *Client) Unmask(msg []byte) ([]byte, error) {
	m, err := UnmarshalUnmaskRequest(msg)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", c.id, err)
	}
	if err := c.expect(StageUnmasking, m.Round); err != nil {
		return nil, err
	}
	signed := map[uint32]bool{}
	toVerify := signedBytes(c.consistencyRaw)
	for _, s := range m.Sigs {
		if !c.isNeighbour(s.Peer) || signed[s.Peer] || !c.consistency.Has(s.Peer) {
			return nil, fmt.Errorf("client %d: consistency signature of %d (not a surviving neighbour or repeated): %w", c.id, s.Peer, ErrInconsistent)
		}
		if !ed25519.Verify(c.cfg.DeviceKeys[s.Peer], toVerify, s.Sig[:]) {
			return nil, fmt.Errorf("client %d: consistency signature of %d: %w", c.id, s.Peer, ErrBadSignature)
		}
		signed[s.Peer] = true
	}
	if len(signed)+1 < c.cfg.Threshold {
		return nil, fmt.Errorf("client %d: %d neighbour signatures, threshold %d: %w", c.id, len(signed), c.cfg.Threshold, ErrTooFew)
	}
	asked := map[uint32]ShareKind{}
	for _, q := range m.Requests {
		if k, ok := asked[q.Peer]; ok {
			if k != q.Kind {
				return nil, fmt.Errorf("client %d: both shares of %d requested: %w", c.id, q.Peer, ErrDoubleReveal)
			}
			return nil, fmt.Errorf("client %d: share of %d requested twice: %w", c.id, q.Peer, ErrInconsistent)
		}
		if k, ok := c.revealed[q.Peer]; ok && k != q.Kind {
			return nil, fmt.Errorf("client %d: share kind %d of %d after kind %d: %w", c.id, q.Kind, q.Peer, k, ErrDoubleReveal)
		}
		if q.Peer != c.id && (c.peers[q.Peer] == nil || c.peers[q.Peer].ct == nil) {
			return nil, fmt.Errorf("client %d: holds no share of %d: %w", c.id, q.Peer, ErrInconsistent)
		}
		if (q.Kind == KindSeed) != c.consistency.Has(q.Peer) {
			return nil, fmt.Errorf("client %d: kind %d for %d contradicts the signed survivor set: %w", c.id, q.Kind, q.Peer, ErrInconsistent)
		}
		asked[q.Peer] = q.Kind
	}
	out := &UnmaskResponse{Round: c.cfg.Round, From: c.id}
	for _, q := range m.Requests {
		share, ok := c.share(q)
		if !ok {
			continue
		}
		c.revealed[q.Peer] = q.Kind
		out.Shares = append(out.Shares, RevealedShare{Peer: q.Peer, Kind: q.Kind, Share: [shareYLen]byte(share)})
	}
	if out.Sig, err = c.sign(out.body()); err != nil {
		return nil, err
	}
	return out.Marshal(), nil
}

// share returns our share of the requested secret, decrypting a peer's
// ciphertext; false if it fails authentication or names the wrong pair.
func (c *Client) share(q ShareRequest) ([]byte, bool) {
	if q.Peer == c.id {
		if q.Kind == KindKey {
			return c.ownS, true
		}
		return c.ownB, true
	}
	p := c.peers[q.Peer]
	plain, err := openShare(p.shareKey, c.cfg.Round, q.Peer, c.id, p.ct[:])
	if err != nil || binary.LittleEndian.Uint32(plain) != q.Peer || binary.LittleEndian.Uint32(plain[4:]) != c.id {
		return nil, false
	}
	if q.Kind == KindKey {
		return plain[8 : 8+shareYLen], true
	}
	return plain[8+shareYLen:], true
}
