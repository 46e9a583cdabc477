package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
)

// Wire format. Every message starts with a 10-byte header: version (1),
// type, round (uint64). Integers are little-endian. Counts are uint32 and
// must match the message length exactly; decoders reject trailing bytes,
// unknown versions and types, and non-canonical encodings, so a decoded
// message re-encodes to the same bytes. Client messages that carry a
// signature end with the 64-byte Ed25519 signature over
// sigDomain || (the message without its signature).

// MsgType identifies a message.
type MsgType uint8

// Message types, in protocol order. Odd ones go client -> server.
const (
	MsgAdvertiseKeys      MsgType = 1 // client -> server, signed
	MsgNeighbourKeys      MsgType = 2 // server -> client: the neighbours' signed adverts
	MsgShareKeys          MsgType = 3 // client -> server, signed: encrypted shares for each neighbour
	MsgForwardedShares    MsgType = 4 // server -> client: the shares addressed to it
	MsgMaskedInput        MsgType = 5 // client -> server: the masked vector
	MsgConsistencyRequest MsgType = 6 // server -> client: the set of clients whose masked input arrived
	MsgConsistencySig     MsgType = 7 // client -> server: signature over that set
	MsgUnmaskRequest      MsgType = 8 // server -> client: neighbours' signatures and the shares wanted
	MsgUnmaskResponse     MsgType = 9 // client -> server, signed: revealed shares
)

const (
	wireVersion = 1
	headerLen   = 10
	sigLen      = ed25519.SignatureSize
	keyLen      = 32
	advertLen   = 4 + 2*keyLen + sigLen // an advert without its header
	sigDomain   = "fedge/secagg/v1 signed message\x00"
)

// ShareKind says which secret a revealed share belongs to.
type ShareKind uint8

// Share kinds: the self-mask seed b_v of a survivor, or the mask key s_sk of
// a client that dropped after sharing. A client reveals at most one kind per peer.
const (
	KindSeed ShareKind = 1
	KindKey  ShareKind = 2
)

// PeekType returns the type and round of an encoded message, for routing.
func PeekType(b []byte) (MsgType, uint64, error) {
	if len(b) < headerLen {
		return 0, 0, fmt.Errorf("message of %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != wireVersion {
		return 0, 0, fmt.Errorf("wire version %d: %w", b[0], ErrMalformed)
	}
	t := MsgType(b[1])
	if t < MsgAdvertiseKeys || t > MsgUnmaskResponse {
		return 0, 0, fmt.Errorf("message type %d: %w", b[1], ErrMalformed)
	}
	return t, binary.LittleEndian.Uint64(b[2:]), nil
}

func header(t MsgType, round uint64, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, wireVersion, byte(t))
	return binary.LittleEndian.AppendUint64(b, round)
}

func signedBytes(body []byte) []byte {
	return append([]byte(sigDomain), body...)
}

// AdvertiseKeys (stage 0) publishes a client's two X25519 public keys:
// CPK for share encryption, SPK for pairwise mask seeds.
type AdvertiseKeys struct {
	Round uint64
	From  uint32
	CPK   [keyLen]byte
	SPK   [keyLen]byte
	Sig   [sigLen]byte
}

func (m *AdvertiseKeys) body() []byte {
	b := header(MsgAdvertiseKeys, m.Round, headerLen+advertLen)
	b = binary.LittleEndian.AppendUint32(b, m.From)
	b = append(b, m.CPK[:]...)
	return append(b, m.SPK[:]...)
}

// Marshal encodes the message.
func (m *AdvertiseKeys) Marshal() []byte { return append(m.body(), m.Sig[:]...) }

// Verify checks the signature with the sender's device key.
func (m *AdvertiseKeys) Verify(pub ed25519.PublicKey) bool {
	return ed25519.Verify(pub, signedBytes(m.body()), m.Sig[:])
}

func (m *AdvertiseKeys) read(r *reader) {
	m.From = r.u32()
	copy(m.CPK[:], r.bytes(keyLen))
	copy(m.SPK[:], r.bytes(keyLen))
	copy(m.Sig[:], r.bytes(sigLen))
}

// UnmarshalAdvertiseKeys decodes an AdvertiseKeys message.
func UnmarshalAdvertiseKeys(b []byte) (*AdvertiseKeys, error) {
	r, round := newReader(b, MsgAdvertiseKeys)
	m := &AdvertiseKeys{Round: round}
	m.read(r)
	return finish(m, r)
}

// NeighbourKeys (server -> client, start of stage 1) carries the adverts
// of the client's neighbours that advertised, with their signatures.
type NeighbourKeys struct {
	Round uint64
	Keys  []AdvertiseKeys // Round of each entry equals Round
}

// Marshal encodes the message.
func (m *NeighbourKeys) Marshal() []byte {
	b := header(MsgNeighbourKeys, m.Round, headerLen+4+len(m.Keys)*advertLen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Keys)))
	for i := range m.Keys {
		b = appendAdvert(b, &m.Keys[i])
	}
	return b
}

// appendAdvert appends k as a NeighbourKeys entry: an advert without its header.
func appendAdvert(b []byte, k *AdvertiseKeys) []byte {
	b = binary.LittleEndian.AppendUint32(b, k.From)
	return append(append(append(b, k.CPK[:]...), k.SPK[:]...), k.Sig[:]...)
}

// UnmarshalNeighbourKeys decodes a NeighbourKeys message.
func UnmarshalNeighbourKeys(b []byte) (*NeighbourKeys, error) {
	r, round := newReader(b, MsgNeighbourKeys)
	m := &NeighbourKeys{Round: round}
	n := r.count(advertLen)
	m.Keys = make([]AdvertiseKeys, n)
	for i := range m.Keys {
		m.Keys[i].Round = round
		m.Keys[i].read(r)
	}
	return finish(m, r)
}

// EncryptedShare is one AES-GCM ciphertext of the pair (s_sk share, b share)
// between Peer and the other end of the message.
type EncryptedShare struct {
	Peer       uint32 // receiver in ShareKeys, sender in ForwardedShares
	Ciphertext [ShareCiphertextLen]byte
}

const encShareLen = 4 + ShareCiphertextLen

func appendShares(b []byte, s []EncryptedShare) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	for i := range s {
		b = appendShare(b, s[i].Peer, &s[i].Ciphertext)
	}
	return b
}

// appendShare appends one EncryptedShare entry.
func appendShare(b []byte, peer uint32, ct *[ShareCiphertextLen]byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, peer)
	return append(b, ct[:]...)
}

func readShares(r *reader) []EncryptedShare {
	s := make([]EncryptedShare, r.count(encShareLen))
	for i := range s {
		s[i].Peer = r.u32()
		copy(s[i].Ciphertext[:], r.bytes(ShareCiphertextLen))
	}
	return s
}

// ShareKeys (stage 1, client -> server) holds one encrypted share pair per
// neighbour.
type ShareKeys struct {
	Round  uint64
	From   uint32
	Shares []EncryptedShare
	Sig    [sigLen]byte
}

func (m *ShareKeys) body() []byte {
	b := header(MsgShareKeys, m.Round, headerLen+8+len(m.Shares)*encShareLen+sigLen)
	b = binary.LittleEndian.AppendUint32(b, m.From)
	return appendShares(b, m.Shares)
}

// Marshal encodes the message.
func (m *ShareKeys) Marshal() []byte { return append(m.body(), m.Sig[:]...) }

// Verify checks the signature with the sender's device key.
func (m *ShareKeys) Verify(pub ed25519.PublicKey) bool {
	return ed25519.Verify(pub, signedBytes(m.body()), m.Sig[:])
}

// UnmarshalShareKeys decodes a ShareKeys message.
func UnmarshalShareKeys(b []byte) (*ShareKeys, error) {
	r, round := newReader(b, MsgShareKeys)
	m := &ShareKeys{Round: round, From: r.u32()}
	m.Shares = readShares(r)
	copy(m.Sig[:], r.bytes(sigLen))
	return finish(m, r)
}

// ForwardedShares (server -> client, start of stage 2) holds the share
// ciphertexts addressed to the client; Peer is the sender.
type ForwardedShares struct {
	Round  uint64
	Shares []EncryptedShare
}

// Marshal encodes the message.
func (m *ForwardedShares) Marshal() []byte {
	b := header(MsgForwardedShares, m.Round, headerLen+4+len(m.Shares)*encShareLen)
	return appendShares(b, m.Shares)
}

// UnmarshalForwardedShares decodes a ForwardedShares message.
func UnmarshalForwardedShares(b []byte) (*ForwardedShares, error) {
	r, round := newReader(b, MsgForwardedShares)
	m := &ForwardedShares{Round: round, Shares: readShares(r)}
	return finish(m, r)
}

// MaskedInput (stage 2, client -> server) is the masked vector.
type MaskedInput struct {
	Round uint64
	From  uint32
	Y     []uint32
}

// Marshal encodes the message.
func (m *MaskedInput) Marshal() []byte {
	b := header(MsgMaskedInput, m.Round, headerLen+8+4*len(m.Y))
	b = binary.LittleEndian.AppendUint32(b, m.From)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Y)))
	b = b[:len(b)+4*len(m.Y)] // within the capacity header allocated
	v := b[headerLen+8:]
	for i, y := range m.Y {
		binary.LittleEndian.PutUint32(v[4*i:], y)
	}
	return b
}

// UnmarshalMaskedInput decodes a MaskedInput message.
func UnmarshalMaskedInput(b []byte) (*MaskedInput, error) {
	r, round := newReader(b, MsgMaskedInput)
	m := &MaskedInput{Round: round, From: r.u32()}
	n := r.countMax(4, 1<<28)
	raw := r.bytes(4 * n)
	if r.err == nil {
		m.Y = make([]uint32, n)
		for i := range m.Y {
			m.Y[i] = binary.LittleEndian.Uint32(raw[4*i:])
		}
	}
	return finish(m, r)
}

// ConsistencyRequest (server -> client, stage 3) announces which clients'
// masked inputs arrived (U3) as a bitmap over all N clients.
type ConsistencyRequest struct {
	Round     uint64
	N         uint32
	Survivors []byte // bit i (byte i/8, bit i%8) set: client i is in U3
}

// Marshal encodes the message.
func (m *ConsistencyRequest) Marshal() []byte {
	b := header(MsgConsistencyRequest, m.Round, headerLen+4+len(m.Survivors))
	b = binary.LittleEndian.AppendUint32(b, m.N)
	return append(b, m.Survivors...)
}

// Has reports whether client i is in the survivor set.
func (m *ConsistencyRequest) Has(i uint32) bool {
	return i < m.N && m.Survivors[i/8]&(1<<(i%8)) != 0
}

// UnmarshalConsistencyRequest decodes a ConsistencyRequest; bits past N must be zero.
func UnmarshalConsistencyRequest(b []byte) (*ConsistencyRequest, error) {
	r, round := newReader(b, MsgConsistencyRequest)
	m := &ConsistencyRequest{Round: round, N: r.u32()}
	if r.err == nil && (m.N == 0 || m.N > MaxClients) {
		r.fail(fmt.Errorf("bitmap over %d clients", m.N))
	}
	m.Survivors = append([]byte(nil), r.bytes(int(m.N+7)/8)...)
	if r.err == nil && m.N%8 != 0 && m.Survivors[len(m.Survivors)-1]>>(m.N%8) != 0 {
		r.fail(fmt.Errorf("bits set past client %d", m.N))
	}
	return finish(m, r)
}

// ConsistencySig (stage 3, client -> server) is the client's signature over
// sigDomain || the ConsistencyRequest it received.
type ConsistencySig struct {
	Round uint64
	From  uint32
	Sig   [sigLen]byte
}

// Marshal encodes the message.
func (m *ConsistencySig) Marshal() []byte {
	b := header(MsgConsistencySig, m.Round, headerLen+4+sigLen)
	b = binary.LittleEndian.AppendUint32(b, m.From)
	return append(b, m.Sig[:]...)
}

// UnmarshalConsistencySig decodes a ConsistencySig message.
func UnmarshalConsistencySig(b []byte) (*ConsistencySig, error) {
	r, round := newReader(b, MsgConsistencySig)
	m := &ConsistencySig{Round: round, From: r.u32()}
	copy(m.Sig[:], r.bytes(sigLen))
	return finish(m, r)
}

// PeerSig is a neighbour's consistency signature.
type PeerSig struct {
	Peer uint32
	Sig  [sigLen]byte
}

// ShareRequest asks for the share of one secret of Peer.
type ShareRequest struct {
	Peer uint32
	Kind ShareKind
}

// UnmaskRequest (server -> client, stage 4) carries the consistency
// signatures of the client's neighbours and the shares the server asks for.
type UnmaskRequest struct {
	Round    uint64
	Sigs     []PeerSig
	Requests []ShareRequest
}

// Marshal encodes the message.
func (m *UnmaskRequest) Marshal() []byte {
	b := header(MsgUnmaskRequest, m.Round, headerLen+8+len(m.Sigs)*(4+sigLen)+len(m.Requests)*5)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Sigs)))
	for _, s := range m.Sigs {
		b = binary.LittleEndian.AppendUint32(b, s.Peer)
		b = append(b, s.Sig[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Requests)))
	for _, q := range m.Requests {
		b = binary.LittleEndian.AppendUint32(b, q.Peer)
		b = append(b, byte(q.Kind))
	}
	return b
}

// UnmarshalUnmaskRequest decodes an UnmaskRequest message.
func UnmarshalUnmaskRequest(b []byte) (*UnmaskRequest, error) {
	r, round := newReader(b, MsgUnmaskRequest)
	m := &UnmaskRequest{Round: round}
	m.Sigs = make([]PeerSig, r.count(4+sigLen))
	for i := range m.Sigs {
		m.Sigs[i].Peer = r.u32()
		copy(m.Sigs[i].Sig[:], r.bytes(sigLen))
	}
	m.Requests = make([]ShareRequest, r.count(5))
	for i := range m.Requests {
		m.Requests[i] = ShareRequest{Peer: r.u32(), Kind: r.kind()}
	}
	return finish(m, r)
}

// RevealedShare is a decrypted Shamir share of one secret of Peer.
type RevealedShare struct {
	Peer  uint32
	Kind  ShareKind
	Share [shareYLen]byte
}

// UnmaskResponse (stage 4, client -> server) holds the requested shares.
type UnmaskResponse struct {
	Round  uint64
	From   uint32
	Shares []RevealedShare
	Sig    [sigLen]byte
}

const revealedLen = 5 + shareYLen

func (m *UnmaskResponse) body() []byte {
	b := header(MsgUnmaskResponse, m.Round, headerLen+8+len(m.Shares)*revealedLen+sigLen)
	b = binary.LittleEndian.AppendUint32(b, m.From)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Shares)))
	for _, s := range m.Shares {
		b = binary.LittleEndian.AppendUint32(b, s.Peer)
		b = append(b, byte(s.Kind))
		b = append(b, s.Share[:]...)
	}
	return b
}

// Marshal encodes the message.
func (m *UnmaskResponse) Marshal() []byte { return append(m.body(), m.Sig[:]...) }

// Verify checks the signature with the sender's device key.
func (m *UnmaskResponse) Verify(pub ed25519.PublicKey) bool {
	return ed25519.Verify(pub, signedBytes(m.body()), m.Sig[:])
}

// UnmarshalUnmaskResponse decodes an UnmaskResponse message.
func UnmarshalUnmaskResponse(b []byte) (*UnmaskResponse, error) {
	r, round := newReader(b, MsgUnmaskResponse)
	m := &UnmaskResponse{Round: round, From: r.u32()}
	m.Shares = make([]RevealedShare, r.count(revealedLen))
	for i := range m.Shares {
		m.Shares[i].Peer = r.u32()
		m.Shares[i].Kind = r.kind()
		copy(m.Shares[i].Share[:], r.bytes(shareYLen))
	}
	copy(m.Sig[:], r.bytes(sigLen))
	return finish(m, r)
}
