// Package secagg is secure aggregation for federated averaging: SecAgg+ (Bell
// et al. 2020) on top of the protocol of Bonawitz et al. 2017 ("Practical
// Secure Aggregation for Privacy-Preserving Machine Learning"). The server
// learns the sum of the clients' quantized input vectors and nothing else
// about any single input, and the sum stays exact when clients drop out.
//
// Client and Server are pure state machines: no IO, no goroutines, no clock.
// Messages are byte slices in a compact, strictly validated binary encoding
// (messages.go). A driver moves them and decides when a stage ends:
//
//	client:  AdvertiseKeys() -> ShareKeys(NeighbourKeys) -> MaskedInput(ForwardedShares, x)
//	         -> ConsistencyCheck(ConsistencyRequest) -> Unmask(UnmaskRequest)
//	server:  Receive(from, msg) for each message of the current stage; when Ready()
//	         or the stage deadline has passed, Advance() returns the messages to
//	         send for the next stage (or call Tick() on every clock tick and let
//	         Config.StageTicks be the deadline). After unmasking Result() has the sum.
//
// The stages are those of the paper: 0 AdvertiseKeys, 1 ShareKeys,
// 2 MaskedInputCollection, 3 ConsistencyCheck, 4 Unmasking. A stage never
// waits forever: the driver calls Advance at the deadline and whoever has not
// spoken counts as dropped. If fewer than Threshold clients are left at any
// stage, or a needed secret has fewer than Threshold shares, the round aborts
// (ErrAborted) and Result reveals nothing.
//
// SecAgg+: instead of every pair of clients, each client shares secrets and
// masks only with its Degree neighbours in a random Harary graph derived
// from the public RoundSeed, so client work is O(Degree x dim) and 1000
// clients are practical. With Degree >= N-1 the graph is complete and the
// protocol is the one of Bonawitz et al. The Shamir holders of a client's
// secrets are its neighbours and itself, with threshold Threshold.
//
// Signatures: AdvertiseKeys, ShareKeys, ConsistencyCheck and UnmaskResponse
// messages carry the client's Ed25519 signature. They exist so that the
// server cannot impersonate a device towards other devices, and they are
// verified by the party that relies on them: each client verifies the
// adverts and the consistency signatures of its neighbours that the server
// relays to it (as in Bonawitz et al., where only users verify). The server
// verifies none of them, and this is deliberate, not an omission:
//   - It gains no security from them. Who sent a message to the server is
//     established by the transport (every device message travels in an
//     envelope signed with the same enrolled key and verified before it
//     reaches Receive), which the server already relies on for MaskedInput,
//     the message that matters most; an inner signature adds nothing to that.
//   - Skipping them cannot hurt clients: a server that relays a bad signature
//     only makes the neighbours that check it refuse (ErrBadSignature), which
//     a malicious server could cause anyway by not relaying at all.
//   - It would buy no robustness worth its price. A bad inner signature can
//     only come from a malicious or broken enrolled device, whose neighbours
//     then refuse; such a device can already abort the round with bad shares
//     (see below), so checking would not make the round robust against it.
//     Meanwhile four Ed25519 verifications per client (about 0.2 ms) cost
//     four times as much as folding in its 100k-coordinate input, and were
//     most of the server's time (BenchmarkSecAgg, BenchmarkSecAggServer).
//
// ShareKeys and UnmaskResponse signatures are relied on by no one today; they
// stay on the wire so that a coordinator can keep them as evidence of what
// each device sent (the Verify methods check them) without a format change.
// MaskedInput is not signed here: only the server consumes it, and the
// transport envelope signs every device message anyway (ARCHITECTURE.md).
//
// What is and is not guaranteed:
//   - Against a server that follows the protocol but tries to learn an
//     input (honest-but-curious, colluding with fewer than Threshold of a
//     client's share holders), it learns only the sum of the inputs of U3,
//     the clients whose masked input arrived. TestServerViewRevealsNoSingleInput
//     shows concretely what the server's view does and does not allow.
//   - Against an active server: it cannot substitute device keys (adverts are
//     signed, DeviceKeys must come from enrollment), cannot read or alter
//     shares (AES-GCM, associated data binds round, sender, receiver), and a
//     client never reveals both secrets of one peer. The consistency check
//     has each client verify its neighbours' signatures over one global
//     survivor bitmap; with the sparse graph that constrains what one
//     neighbourhood is told, not the whole fleet, so this is weaker than
//     Bell et al.'s full malicious-security argument (which also bounds how
//     the server may pick the graph: RoundSeed should be fixed, e.g. as a
//     hash of the round announcement, before the server sees any key).
//   - Clients are trusted to send well-formed inputs: a malicious client can
//     shift the sum within its clip range (secure aggregation hides inputs,
//     it does not validate them), or make the round abort with bad shares
//     (detected as ErrInconsistent, not silently wrong).
//
// Driver notes: client indices are positions in the round's sorted list of
// selected devices; every Receive error is a reason to drop that one
// message, not the round; ErrDuplicate means a redelivery.
package secagg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Stage is a step of the protocol.
type Stage uint8

// The stages, numbered as in Bonawitz et al. (rounds 0 to 4), then the end states.
const (
	StageAdvertiseKeys Stage = iota
	StageShareKeys
	StageMaskedInputCollection
	StageConsistencyCheck
	StageUnmasking
	StageDone
	StageAborted
)

// String names the stage as in the paper.
func (s Stage) String() string {
	switch s {
	case StageAdvertiseKeys:
		return "AdvertiseKeys"
	case StageShareKeys:
		return "ShareKeys"
	case StageMaskedInputCollection:
		return "MaskedInputCollection"
	case StageConsistencyCheck:
		return "ConsistencyCheck"
	case StageUnmasking:
		return "Unmasking"
	case StageDone:
		return "Done"
	case StageAborted:
		return "Aborted"
	}
	return fmt.Sprintf("Stage(%d)", uint8(s))
}

// Sentinel errors callers test with errors.Is.
var (
	ErrConfig        = errors.New("secagg: invalid config")
	ErrMalformed     = errors.New("secagg: malformed message")
	ErrWrongStage    = errors.New("secagg: message not expected at this stage")
	ErrWrongRound    = errors.New("secagg: message for another round")
	ErrDuplicate     = errors.New("secagg: duplicate message")
	ErrUnknownClient = errors.New("secagg: message from a client not in this stage")
	ErrBadSignature  = errors.New("secagg: bad signature")
	ErrAborted       = errors.New("secagg: round aborted")
	ErrTooFew        = errors.New("secagg: fewer than threshold participants")
	ErrInconsistent  = errors.New("secagg: server view is inconsistent")
	ErrDoubleReveal  = errors.New("secagg: request would reveal both the seed share and the key share of a peer")
	ErrDecrypt       = errors.New("secagg: share decryption failed")
	ErrNoInput       = errors.New("secagg: invalid input vector")
)

// MaxClients bounds N (and every count in a decoded message).
const MaxClients = 1 << 20

// Config is the public description of one round, identical at the server
// and every client.
type Config struct {
	Round     uint64   // round number, bound into every message, key and signature
	RoundSeed [32]byte // public randomness for the neighbour graph
	N         int      // clients, identified by index 0..N-1
	Degree    int      // neighbours per client: even, or >= N-1 for the complete graph
	Threshold int      // Shamir threshold t: 2 <= t <= Degree+1 (neighbours plus self), t > (Degree+1)/2
	Dim       int      // length of each client's input vector
	Clip      float64  // inputs are clipped to [-Clip, Clip] before quantization
	// MaxWeight > 0 enables the weight channel: a client's weight w is
	// clipped to [0, MaxWeight], its values are multiplied by w/MaxWeight and
	// w/MaxWeight travels as an extra coordinate, so the weighted mean is
	// Sum/WeightSum (FedAvg). 0 sends the plain vector.
	MaxWeight float64
	// DeviceKeys[i] verifies client i's signatures. Clients must obtain this
	// table through a channel the server cannot forge (enrollment, a fleet
	// CA); otherwise the server could substitute keys and impersonate devices.
	DeviceKeys []ed25519.PublicKey
	// StageTicks > 0 makes Server.Tick end a stage after that many ticks
	// (the stage timeout, in the caller's clock); 0 leaves every Advance to
	// the caller.
	StageTicks int
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	switch {
	case c.N < 2 || c.N > MaxClients:
		return fmt.Errorf("N=%d outside [2, %d]: %w", c.N, MaxClients, ErrConfig)
	case c.Degree < 2 || (c.Degree < c.N-1 && c.Degree%2 != 0):
		return fmt.Errorf("degree %d must be even and >= 2, or >= N-1: %w", c.Degree, ErrConfig)
	case c.Threshold < 2 || c.Threshold > c.holders():
		return fmt.Errorf("threshold %d outside [2, %d]: %w", c.Threshold, c.holders(), ErrConfig)
	case 2*c.Threshold <= c.holders():
		return fmt.Errorf("threshold %d must exceed half of the %d share holders: %w", c.Threshold, c.holders(), ErrConfig)
	case c.Dim < 1 || c.Dim > 1<<28:
		return fmt.Errorf("dim %d: %w", c.Dim, ErrConfig)
	case !(c.Clip > 0) || math.IsInf(c.Clip, 0):
		return fmt.Errorf("clip %v: %w", c.Clip, ErrConfig)
	case !(c.MaxWeight >= 0) || math.IsInf(c.MaxWeight, 0):
		return fmt.Errorf("max weight %v: %w", c.MaxWeight, ErrConfig)
	case c.StageTicks < 0:
		return fmt.Errorf("stage ticks %d: %w", c.StageTicks, ErrConfig)
	case len(c.DeviceKeys) != c.N:
		return fmt.Errorf("%d device keys for %d clients: %w", len(c.DeviceKeys), c.N, ErrConfig)
	}
	for i, k := range c.DeviceKeys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("device key %d has %d bytes: %w", i, len(k), ErrConfig)
		}
	}
	return nil
}

// holders is the number of Shamir share holders per client (neighbours + self).
func (c *Config) holders() int { return min(c.Degree, c.N-1) + 1 }

// VectorLen is the length of the masked vectors: Dim, plus one for the
// weight channel.
func (c *Config) VectorLen() int {
	if c.MaxWeight > 0 {
		return c.Dim + 1
	}
	return c.Dim
}

// RecommendedDegree is a heuristic neighbour count for n clients: the
// complete graph up to 16 clients, otherwise about 3*log2(n) (even), the
// order of magnitude suggested by Bell et al.; size it from their bounds for
// a given dropout and corruption rate in production.
func RecommendedDegree(n int) int {
	if n <= 16 {
		return n - 1
	}
	k := 3 * bits.Len(uint(n-1))
	k += k % 2
	if k >= n-1 {
		return n - 1
	}
	return k
}

// Neighbours returns, for every client, its sorted neighbour list in the
// Harary graph H(N, Degree) laid over a permutation of the clients drawn
// from RoundSeed: on the permuted ring each client is joined to the Degree/2
// nearest clients on each side. The graph is Degree-regular (complete when
// Degree >= N-1), public and identical for server and clients.
func (c *Config) Neighbours() [][]uint32 {
	out := make([][]uint32, c.N)
	if c.Degree >= c.N-1 {
		for u := range out {
			out[u] = c.NeighboursOf(uint32(u))
		}
		return out
	}
	perm, pos := c.permutation()
	for u := range out {
		out[u] = c.ringNeighbours(perm, pos[u])
	}
	return out
}

// NeighboursOf returns the sorted neighbours of client u (see Neighbours).
func (c *Config) NeighboursOf(u uint32) []uint32 {
	if c.Degree >= c.N-1 {
		nb := make([]uint32, 0, c.N-1)
		for v := 0; v < c.N; v++ {
			if uint32(v) != u {
				nb = append(nb, uint32(v))
			}
		}
		return nb
	}
	perm, pos := c.permutation()
	return c.ringNeighbours(perm, pos[u])
}

// permutation is a Fisher-Yates shuffle of the clients driven by
// PRG(RoundSeed) with exactly uniform draws; pos is its inverse.
func (c *Config) permutation() (perm, pos []uint32) {
	perm = make([]uint32, c.N)
	for i := range perm {
		perm[i] = uint32(i)
	}
	prg := newPRG(c.RoundSeed, domainGraph)
	for i := c.N - 1; i > 0; i-- {
		j := prg.uniform(uint64(i + 1))
		perm[i], perm[j] = perm[j], perm[i]
	}
	pos = make([]uint32, c.N)
	for p, u := range perm {
		pos[u] = uint32(p)
	}
	return perm, pos
}

func (c *Config) ringNeighbours(perm []uint32, p uint32) []uint32 {
	n := c.N
	nb := make([]uint32, 0, c.Degree)
	for d := 1; d <= c.Degree/2; d++ {
		nb = append(nb, perm[(int(p)+d)%n], perm[(int(p)-d+n)%n])
	}
	slices.Sort(nb)
	return nb
}
