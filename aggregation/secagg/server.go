package secagg

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/fedge-dev/fedge/aggregation/secagg/shamir"
)

// Outbound is a message for one client.
type Outbound struct {
	To      uint32
	Payload []byte
}

// Server is the coordinator's side of a round. Masked inputs are folded
// into one running sum as they arrive (O(VectorLen) memory whatever N is);
// at the end the server expands only the self masks of survivors and the
// pairwise masks between dropped clients and their surviving neighbours.
type Server struct {
	cfg   Config
	nbrs  [][]uint32
	stage Stage
	err   error // why the round aborted
	ticks int   // ticks spent in the current stage

	sent []bool // clients sent this stage's server message (all, in stage 0)
	got  []bool // clients whose message for this stage arrived

	adverts  []*AdvertiseKeys
	u2, u3   []bool     // shared keys; sent masked input
	expected [][]uint32 // ShareKeys: the neighbours each client was given
	shares   []*ShareKeys
	acc      []uint32
	consReq  []byte
	consSigs [][sigLen]byte
	// asked[u] are the requests of the UnmaskRequest sent to u, by Peer.
	asked [][]ShareRequest
	// revealed[v] are the shares of v's secret received so far: of b_v if
	// v is in U3, of s_sk of v if it dropped after sharing keys (a peer's
	// kind is the same in every request).
	revealed [][]shamir.Share
	result   *Result
}

// NewServer creates the server of the round described by cfg.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	s := &Server{cfg: cfg, nbrs: cfg.Neighbours(), sent: make([]bool, cfg.N), got: make([]bool, cfg.N),
		adverts: make([]*AdvertiseKeys, cfg.N), expected: make([][]uint32, cfg.N), shares: make([]*ShareKeys, cfg.N)}
	for i := range s.sent {
		s.sent[i] = true
	}
	return s, nil
}

// Stage is the stage whose client messages the server is collecting.
func (s *Server) Stage() Stage { return s.stage }

// Err is the reason the round aborted, or nil.
func (s *Server) Err() error { return s.err }

// Pending lists the clients whose message for the current stage has not
// arrived; a driver waits for them until the stage deadline.
func (s *Server) Pending() []uint32 {
	var out []uint32
	if s.stage >= StageDone {
		return nil
	}
	for i, sent := range s.sent {
		if sent && !s.got[i] {
			out = append(out, uint32(i))
		}
	}
	return out
}

// Ready reports whether every client expected in this stage has answered,
// so the driver can Advance before the deadline.
func (s *Server) Ready() bool { return s.stage < StageDone && len(s.Pending()) == 0 }

// Tick advances the server's clock by one tick. It ends the stage (see
// Advance) when every expected message has arrived or, with
// Config.StageTicks > 0, when the stage has lasted that many ticks;
// advanced reports whether it did. After the round ends it does nothing.
func (s *Server) Tick() (out []Outbound, advanced bool, err error) {
	if s.stage >= StageDone {
		return nil, false, nil
	}
	s.ticks++
	if !s.Ready() && (s.cfg.StageTicks == 0 || s.ticks < s.cfg.StageTicks) {
		return nil, false, nil
	}
	out, err = s.Advance()
	return out, true, err
}

var stageMsg = [...]MsgType{MsgAdvertiseKeys, MsgShareKeys, MsgMaskedInput, MsgConsistencySig, MsgUnmaskResponse}

// Receive validates and records the message of client from for the current
// stage. Errors: ErrWrongStage, ErrWrongRound, ErrUnknownClient, ErrDuplicate
// (e.g. a redelivery; safe to ignore), ErrMalformed, ErrInconsistent. A
// rejected message changes nothing. from must be authenticated by the
// transport (the device-signed envelope): the server does not check the
// protocol's own signatures (see "Signatures" in the package doc).
func (s *Server) Receive(from uint32, msg []byte) error {
	if s.stage >= StageDone {
		return fmt.Errorf("receive from %d: round is %v: %w", from, s.stage, ErrWrongStage)
	}
	t, round, err := PeekType(msg)
	if err != nil {
		return fmt.Errorf("receive from %d: %w", from, err)
	}
	if t != stageMsg[s.stage] {
		return fmt.Errorf("receive from %d: message type %d in stage %v: %w", from, t, s.stage, ErrWrongStage)
	}
	if round != s.cfg.Round {
		return fmt.Errorf("receive from %d: round %d, want %d: %w", from, round, s.cfg.Round, ErrWrongRound)
	}
	if int(from) >= s.cfg.N || !s.sent[from] {
		return fmt.Errorf("receive from %d in stage %v: %w", from, s.stage, ErrUnknownClient)
	}
	if s.got[from] {
		return fmt.Errorf("receive from %d in stage %v: %w", from, s.stage, ErrDuplicate)
	}
	switch s.stage {
	case StageAdvertiseKeys:
		err = s.receiveAdvert(from, msg)
	case StageShareKeys:
		err = s.receiveShareKeys(from, msg)
	case StageMaskedInputCollection:
		err = s.receiveMaskedInput(from, msg)
	case StageConsistencyCheck:
		err = s.receiveConsistency(from, msg)
	case StageUnmasking:
		err = s.receiveUnmask(from, msg)
	}
	if err != nil {
		return fmt.Errorf("receive %v from %d: %w", s.stage, from, err)
	}
	s.got[from] = true
	return nil
}

func checkFrom(from, claimed uint32) error {
	if from != claimed {
		return fmt.Errorf("message claims sender %d: %w", claimed, ErrUnknownClient)
	}
	return nil
}

func (s *Server) receiveAdvert(from uint32, msg []byte) error {
	m, err := UnmarshalAdvertiseKeys(msg)
	if err != nil {
		return err
	}
	if err := checkFrom(from, m.From); err != nil {
		return err
	}
	// No signature check here: see "Signatures" in the package doc.
	if m.CPK == m.SPK {
		return fmt.Errorf("equal public keys: %w", ErrInconsistent)
	}
	if lowOrder(m.CPK) || lowOrder(m.SPK) {
		return fmt.Errorf("low-order public key: %w", ErrInconsistent)
	}
	s.adverts[from] = m
	return nil
}

func (s *Server) receiveShareKeys(from uint32, msg []byte) error {
	m, err := UnmarshalShareKeys(msg)
	if err != nil {
		return err
	}
	if err := checkFrom(from, m.From); err != nil {
		return err
	}
	want := s.expected[from]
	if len(m.Shares) != len(want) {
		return fmt.Errorf("%d shares for %d neighbours: %w", len(m.Shares), len(want), ErrInconsistent)
	}
	for i, sh := range m.Shares {
		if sh.Peer != want[i] {
			return fmt.Errorf("share %d for %d, want %d: %w", i, sh.Peer, want[i], ErrInconsistent)
		}
	}
	s.shares[from] = m
	return nil
}

// receiveMaskedInput decodes straight into the running sum (the format is
// that of UnmarshalMaskedInput, checked here without a copy).
func (s *Server) receiveMaskedInput(from uint32, msg []byte) error {
	const fixed = headerLen + 8
	n := s.cfg.VectorLen()
	if len(msg) != fixed+4*n {
		return fmt.Errorf("masked input of %d bytes, want %d: %w", len(msg), fixed+4*n, ErrMalformed)
	}
	if err := checkFrom(from, binary.LittleEndian.Uint32(msg[headerLen:])); err != nil {
		return err
	}
	if got := binary.LittleEndian.Uint32(msg[headerLen+4:]); got != uint32(n) {
		return fmt.Errorf("masked input of length %d, want %d: %w", got, n, ErrMalformed)
	}
	addLE(s.acc, msg[fixed:])
	return nil
}

func (s *Server) receiveConsistency(from uint32, msg []byte) error {
	m, err := UnmarshalConsistencySig(msg)
	if err != nil {
		return err
	}
	if err := checkFrom(from, m.From); err != nil {
		return err
	}
	s.consSigs[from] = m.Sig
	return nil
}

func (s *Server) receiveUnmask(from uint32, msg []byte) error {
	m, err := UnmarshalUnmaskResponse(msg)
	if err != nil {
		return err
	}
	if err := checkFrom(from, m.From); err != nil {
		return err
	}
	asked := s.asked[from]
	parsed := make([]shamir.Share, len(m.Shares))
	seen := make([]bool, len(asked))
	for i, r := range m.Shares {
		j, ok := slices.BinarySearchFunc(asked, r.Peer, func(q ShareRequest, p uint32) int { return cmp.Compare(q.Peer, p) })
		if !ok || asked[j].Kind != r.Kind || seen[j] {
			return fmt.Errorf("share kind %d of %d was not requested: %w", r.Kind, r.Peer, ErrInconsistent)
		}
		seen[j] = true
		if parsed[i], err = shamir.ParseShareY(uint64(from)+1, r.Share[:], 32); err != nil {
			return fmt.Errorf("share of %d: %w: %w", r.Peer, ErrMalformed, err)
		}
	}
	for i, r := range m.Shares {
		if s.revealed[r.Peer] == nil {
			s.revealed[r.Peer] = make([]shamir.Share, 0, s.cfg.holders())
		}
		s.revealed[r.Peer] = append(s.revealed[r.Peer], parsed[i])
	}
	return nil
}

// Advance ends the current stage (all expected messages arrived, or its
// deadline passed: silent clients count as dropped) and returns the
// messages that start the next one. After Unmasking it computes the result
// and returns no messages. If fewer than Threshold clients can go on, the
// round aborts: the error wraps ErrAborted and the server discards the sum.
func (s *Server) Advance() ([]Outbound, error) {
	var out []Outbound
	var err error
	switch s.stage {
	case StageAdvertiseKeys:
		out, err = s.startShareKeys()
	case StageShareKeys:
		out, err = s.startMaskedInput()
	case StageMaskedInputCollection:
		out, err = s.startConsistency()
	case StageConsistencyCheck:
		out, err = s.startUnmasking()
	case StageUnmasking:
		err = s.finish()
	default:
		return nil, fmt.Errorf("advance: round is %v: %w", s.stage, ErrWrongStage)
	}
	if err != nil {
		failed := s.stage
		s.abort(err)
		return nil, fmt.Errorf("advance from %v: %w: %w", failed, ErrAborted, err)
	}
	s.stage++
	s.ticks = 0
	if s.stage < StageDone {
		clear(s.sent)
		for _, o := range out {
			s.sent[o.To] = true
		}
		clear(s.got)
	}
	return out, nil
}

func (s *Server) abort(err error) {
	s.stage, s.err = StageAborted, err
	s.acc, s.revealed, s.shares, s.result = nil, nil, nil, nil
}

// enough returns ErrTooFew unless at least Threshold clients go on.
func (s *Server) enough(what string, n int) error {
	if n < s.cfg.Threshold {
		return fmt.Errorf("%d clients %s, threshold %d: %w", n, what, s.cfg.Threshold, ErrTooFew)
	}
	return nil
}

func count(set []bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

func (s *Server) startShareKeys() ([]Outbound, error) {
	u1 := s.got
	if err := s.enough("advertised keys", count(u1)); err != nil {
		return nil, err
	}
	out := make([]Outbound, 0, count(u1))
	for u := range s.cfg.N {
		if !u1[u] {
			continue
		}
		ex := make([]uint32, 0, len(s.nbrs[u]))
		for _, v := range s.nbrs[u] {
			if u1[v] {
				ex = append(ex, v)
			}
		}
		s.expected[u] = ex
		if len(ex)+1 < s.cfg.Threshold {
			continue // too few neighbours left to recover its secrets: it drops
		}
		// NeighbourKeys{Keys: the adverts of ex}, encoded in place.
		b := header(MsgNeighbourKeys, s.cfg.Round, headerLen+4+len(ex)*advertLen)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ex)))
		for _, v := range ex {
			b = appendAdvert(b, s.adverts[v])
		}
		out = append(out, Outbound{To: uint32(u), Payload: b})
	}
	return out, s.enough("with enough neighbours to share keys", len(out))
}

// startMaskedInput forwards to each client u of U2 the shares addressed to
// it by the members of U2, ordered by sender. The graph is symmetric, so
// they are the shares of the members v of U2 in expected[u], and v's share
// for u sits at u's position in expected[v] (receiveShareKeys checked it).
func (s *Server) startMaskedInput() ([]Outbound, error) {
	s.u2 = append([]bool(nil), s.got...)
	if err := s.enough("shared keys", count(s.u2)); err != nil {
		return nil, err
	}
	out := make([]Outbound, 0, count(s.u2))
	type forward struct {
		from uint32
		ct   *[ShareCiphertextLen]byte
	}
	var fw []forward
	for u := range s.cfg.N {
		if !s.u2[u] {
			continue
		}
		fw = fw[:0]
		for _, v := range s.expected[u] {
			if !s.u2[v] {
				continue
			}
			if i, ok := slices.BinarySearch(s.expected[v], uint32(u)); ok {
				fw = append(fw, forward{v, &s.shares[v].Shares[i].Ciphertext})
			}
		}
		if len(fw)+1 < s.cfg.Threshold {
			continue
		}
		b := header(MsgForwardedShares, s.cfg.Round, headerLen+4+len(fw)*encShareLen)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(fw)))
		for _, f := range fw {
			b = appendShare(b, f.from, f.ct)
		}
		out = append(out, Outbound{To: uint32(u), Payload: b})
	}
	s.shares = nil
	s.acc = make([]uint32, s.cfg.VectorLen())
	return out, s.enough("with enough neighbours to mask", len(out))
}

func (s *Server) startConsistency() ([]Outbound, error) {
	s.u3 = append([]bool(nil), s.got...)
	if err := s.enough("sent masked inputs", count(s.u3)); err != nil {
		return nil, err
	}
	req := &ConsistencyRequest{Round: s.cfg.Round, N: uint32(s.cfg.N), Survivors: make([]byte, (s.cfg.N+7)/8)}
	for u, in := range s.u3 {
		if in {
			req.Survivors[u/8] |= 1 << (u % 8)
		}
	}
	s.consReq = req.Marshal()
	s.consSigs = make([][sigLen]byte, s.cfg.N)
	var out []Outbound
	for u, in := range s.u3 {
		if in {
			out = append(out, Outbound{To: uint32(u), Payload: s.consReq})
		}
	}
	return out, nil
}

func (s *Server) startUnmasking() ([]Outbound, error) {
	u4 := s.got
	if err := s.enough("signed the survivor set", count(u4)); err != nil {
		return nil, err
	}
	s.asked = make([][]ShareRequest, s.cfg.N)
	s.revealed = make([][]shamir.Share, s.cfg.N)
	out := make([]Outbound, 0, count(u4))
	for u := range s.cfg.N {
		if !u4[u] {
			continue
		}
		nb := s.nbrs[u]
		m := &UnmaskRequest{Round: s.cfg.Round, Sigs: make([]PeerSig, 0, len(nb)), Requests: make([]ShareRequest, 1, len(nb)+1)}
		m.Requests[0] = ShareRequest{Peer: uint32(u), Kind: KindSeed}
		for _, v := range nb {
			if u4[v] {
				m.Sigs = append(m.Sigs, PeerSig{Peer: v, Sig: s.consSigs[v]})
			}
			switch {
			case s.u3[v]:
				m.Requests = append(m.Requests, ShareRequest{Peer: v, Kind: KindSeed})
			case s.u2[v]:
				m.Requests = append(m.Requests, ShareRequest{Peer: v, Kind: KindKey})
			}
		}
		if len(m.Sigs)+1 < s.cfg.Threshold {
			continue // it would refuse: too few neighbours confirmed the set
		}
		asked := slices.Clone(m.Requests)
		slices.SortFunc(asked, func(a, b ShareRequest) int { return cmp.Compare(a.Peer, b.Peer) })
		s.asked[u] = asked
		out = append(out, Outbound{To: uint32(u), Payload: m.Marshal()})
	}
	return out, s.enough("asked to unmask", len(out))
}
