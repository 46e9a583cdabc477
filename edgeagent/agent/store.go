package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// MaxDoneRounds is how many finished round ids a StateStore remembers; a
// task for a remembered round is never run again.
const MaxDoneRounds = 1024

// ErrCorrupt is returned when a stored record cannot be decoded.
var ErrCorrupt = errors.New("corrupt agent state record")

// Pending is a sealed update or evaluation result waiting for its Ack. It is
// persisted before its first publish and re-published until acknowledged.
type Pending struct {
	RoundID   uint64
	MessageID []byte // the envelope's message id, echoed by the Ack
	Envelope  []byte // the marshalled, signed envelope
	Blob      []byte // the encoded delta when sent as a blob (nil: inline)
}

// StateStore persists what the agent must not lose across a crash: the
// enrollment flag, the task in progress, unacknowledged results and the
// rounds already done. Every method is atomic; implementations are safe for
// concurrent use.
type StateStore interface {
	Enrolled() (bool, error)
	SetEnrolled() error
	// Task returns the persisted task (nil if none).
	Task() (*fedgepb.RoundTask, error)
	PutTask(t *fedgepb.RoundTask) error
	// FinishTask atomically stores p as pending and deletes the task of
	// round p.RoundID.
	FinishTask(p Pending) error
	// DropTask atomically deletes the task of round and records the round
	// as done.
	DropTask(round uint64) error
	// Pending returns the unacknowledged results, by ascending round.
	Pending() ([]Pending, error)
	// Acked atomically deletes the pending result of round and records the
	// round as done.
	Acked(round uint64) error
	// Done returns the remembered finished rounds, ascending.
	Done() ([]uint64, error)
	Close() error
}

// encodePending is the stored form of a Pending:
// u64 round | u32 len | message id | u32 len | envelope | u32 len | blob
// (little-endian).
func encodePending(p Pending) []byte {
	b := make([]byte, 0, 8+12+len(p.MessageID)+len(p.Envelope)+len(p.Blob))
	b = binary.LittleEndian.AppendUint64(b, p.RoundID)
	for _, f := range [][]byte{p.MessageID, p.Envelope, p.Blob} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// decodePending parses encodePending's output; it is the decoder of the
// agent's own disk records, fuzzed in FuzzDecodePending.
func decodePending(b []byte) (Pending, error) {
	var p Pending
	if len(b) < 8 {
		return p, fmt.Errorf("%w: pending record of %d bytes", ErrCorrupt, len(b))
	}
	p.RoundID = binary.LittleEndian.Uint64(b)
	b = b[8:]
	var fields [3][]byte
	for i := range fields {
		if len(b) < 4 {
			return Pending{}, fmt.Errorf("%w: pending record truncated at field %d", ErrCorrupt, i)
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return Pending{}, fmt.Errorf("%w: pending field %d claims %d bytes, %d left", ErrCorrupt, i, n, len(b))
		}
		if n > 0 {
			fields[i] = slices.Clone(b[:n])
		}
		b = b[n:]
	}
	if len(b) != 0 {
		return Pending{}, fmt.Errorf("%w: %d trailing bytes in pending record", ErrCorrupt, len(b))
	}
	p.MessageID, p.Envelope, p.Blob = fields[0], fields[1], fields[2]
	if p.RoundID == 0 || len(p.MessageID) != wire.MessageIDSize || len(p.Envelope) == 0 {
		return Pending{}, fmt.Errorf("%w: pending record for round %d with %d-byte message id and %d-byte envelope",
			ErrCorrupt, p.RoundID, len(p.MessageID), len(p.Envelope))
	}
	return p, nil
}

// decodeTask parses a stored task and validates it as a received one.
func decodeTask(b []byte) (*fedgepb.RoundTask, error) {
	t := new(fedgepb.RoundTask)
	if err := proto.Unmarshal(b, t); err != nil {
		return nil, fmt.Errorf("%w: task: %w", ErrCorrupt, err)
	}
	if err := wire.ValidatePayload(fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, t, wire.Limits{}); err != nil {
		return nil, fmt.Errorf("%w: task: %w", ErrCorrupt, err)
	}
	return t, nil
}

// MemoryStore is the in-memory StateStore, used by the fleet simulator and
// by tests. It shares nothing with its callers: values are copied.
type MemoryStore struct {
	mu       sync.Mutex
	enrolled bool
	task     []byte
	pending  map[uint64][]byte
	done     []uint64
	closed   bool
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{pending: map[uint64][]byte{}} }

var errStoreClosed = errors.New("agent state store closed")

func (s *MemoryStore) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errStoreClosed
	}
	return nil
}

// Enrolled implements StateStore.
func (s *MemoryStore) Enrolled() (bool, error) {
	if err := s.lock(); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	return s.enrolled, nil
}

// SetEnrolled implements StateStore.
func (s *MemoryStore) SetEnrolled() error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.enrolled = true
	return nil
}

// Task implements StateStore.
func (s *MemoryStore) Task() (*fedgepb.RoundTask, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if s.task == nil {
		return nil, nil
	}
	return decodeTask(s.task)
}

// PutTask implements StateStore.
func (s *MemoryStore) PutTask(t *fedgepb.RoundTask) error {
	b, err := proto.Marshal(t)
	if err != nil {
		return fmt.Errorf("store task: %w", err)
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.task = b
	return nil
}

// FinishTask implements StateStore.
func (s *MemoryStore) FinishTask(p Pending) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.pending[p.RoundID] = encodePending(p)
	s.deleteTaskLocked(p.RoundID)
	return nil
}

func (s *MemoryStore) deleteTaskLocked(round uint64) {
	if s.task == nil {
		return
	}
	if t, err := decodeTask(s.task); err != nil || t.RoundId == round {
		s.task = nil
	}
}

// DropTask implements StateStore.
func (s *MemoryStore) DropTask(round uint64) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.deleteTaskLocked(round)
	s.done = addDone(s.done, round)
	return nil
}

// Pending implements StateStore.
func (s *MemoryStore) Pending() ([]Pending, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	rounds := make([]uint64, 0, len(s.pending))
	for r := range s.pending {
		rounds = append(rounds, r)
	}
	slices.Sort(rounds)
	out := make([]Pending, 0, len(rounds))
	for _, r := range rounds {
		p, err := decodePending(s.pending[r])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Acked implements StateStore.
func (s *MemoryStore) Acked(round uint64) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.pending, round)
	s.done = addDone(s.done, round)
	return nil
}

// Done implements StateStore.
func (s *MemoryStore) Done() ([]uint64, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return slices.Clone(s.done), nil
}

// Close implements StateStore.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// addDone inserts round into the ascending list, keeping the newest
// MaxDoneRounds.
func addDone(done []uint64, round uint64) []uint64 {
	i, found := slices.BinarySearch(done, round)
	if !found {
		done = slices.Insert(done, i, round)
	}
	if len(done) > MaxDoneRounds {
		done = slices.Delete(done, 0, len(done)-MaxDoneRounds)
	}
	return done
}
