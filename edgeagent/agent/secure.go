package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/aggregation/secagg"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Secure aggregation on the device (the coordinator's side and the message
// flow are described in coordinator/server/secure.go). A training task
// carrying SecAggParams trains as usual, then runs a secagg.Client signed
// with the device's enrolled key instead of sending its delta: it waits for
// the coordinator's setup, advertises its keys, shares them, and sends its
// masked input as the task's result (an Update with CODEC_SECAGG, persisted
// and resent until acknowledged like any result). The consistency check
// and unmasking stages follow in the background. Every wait ends at the
// task's deadline. The client's secrets live in memory only: an agent
// restarted mid-round cannot finish that round's protocol (the coordinator
// recovers its secrets from the other devices' shares).

// secureStages is the number of coordinator messages per round: the setup
// and the messages starting stages 1 to 4.
const secureStages = 5

// maxSecureRounds bounds the rounds whose coordinator messages are kept.
const maxSecureRounds = 4

// ErrSecureSetup is wrapped by errors about a secure task's setup.
var ErrSecureSetup = errors.New("secure aggregation setup")

// secureInbox holds the coordinator's secure aggregation messages by round
// and stage until the task's protocol reads them.
type secureInbox struct {
	mu     sync.Mutex
	rounds map[uint64]*[secureStages]chan []byte
}

func newSecureInbox() *secureInbox {
	return &secureInbox{rounds: map[uint64]*[secureStages]chan []byte{}}
}

// get returns the channels of round, creating them (and forgetting the
// oldest round beyond maxSecureRounds).
func (b *secureInbox) get(round uint64) *[secureStages]chan []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.rounds[round]; ok {
		return ch
	}
	ch := new([secureStages]chan []byte)
	for i := range ch {
		ch[i] = make(chan []byte, 1)
	}
	b.rounds[round] = ch
	for len(b.rounds) > maxSecureRounds {
		oldest := round
		for r := range b.rounds {
			oldest = min(oldest, r)
		}
		delete(b.rounds, oldest)
	}
	return ch
}

// deliver files a verified message; a second copy of a stage's message is
// dropped (the first one is what the protocol answers).
func (b *secureInbox) deliver(m *fedgepb.SecAggMessage) bool {
	if m.Stage < 1 || m.Stage > secureStages || len(m.Body) == 0 {
		return false
	}
	select {
	case b.get(m.RoundId)[m.Stage-1] <- m.Body:
		return true
	default:
		return false
	}
}

func (b *secureInbox) forget(round uint64) {
	b.mu.Lock()
	delete(b.rounds, round)
	b.mu.Unlock()
}

// SecureSetup is the decoded setup message of a secure round.
type SecureSetup struct {
	MaxWeight float64
	Dim       int
	Keys      []ed25519.PublicKey // participant order
}

// DecodeSecureSetup decodes the coordinator's setup body for n
// participants (layout: coordinator/server.EncodeSetupBody).
func DecodeSecureSetup(b []byte, n int) (*SecureSetup, error) {
	if n < 2 || n > secagg.MaxClients || len(b) != 12+32*n {
		return nil, fmt.Errorf("%w: %d bytes for %d participants", ErrSecureSetup, len(b), n)
	}
	s := &SecureSetup{MaxWeight: math.Float64frombits(binary.LittleEndian.Uint64(b)), Dim: int(binary.LittleEndian.Uint32(b[8:]))}
	if math.IsNaN(s.MaxWeight) || math.IsInf(s.MaxWeight, 0) || s.MaxWeight <= 0 {
		return nil, fmt.Errorf("%w: max weight %v", ErrSecureSetup, s.MaxWeight)
	}
	if s.Dim < 1 || s.Dim > 1<<28 {
		return nil, fmt.Errorf("%w: dimension %d", ErrSecureSetup, s.Dim)
	}
	s.Keys = make([]ed25519.PublicKey, n)
	for i := range s.Keys {
		s.Keys[i] = ed25519.PublicKey(slices.Clone(b[12+32*i : 12+32*(i+1)]))
	}
	return s, nil
}

// SecureConfig builds the secagg configuration of a secure task for the
// device self from the task's parameters and the setup; it returns the
// device's client index.
func SecureConfig(t *fedgepb.RoundTask, self string, setup *SecureSetup) (secagg.Config, uint32, error) {
	p := t.GetSecagg()
	if p == nil {
		return secagg.Config{}, 0, fmt.Errorf("%w: task of round %d has no parameters", ErrSecureSetup, t.GetRoundId())
	}
	ids := p.Participants
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			return secagg.Config{}, 0, fmt.Errorf("%w: participants not in ascending order", ErrSecureSetup)
		}
	}
	idx, found := slices.BinarySearch(ids, self)
	switch {
	case !found:
		return secagg.Config{}, 0, fmt.Errorf("%w: %s is not a participant", ErrSecureSetup, self)
	case len(setup.Keys) != len(ids):
		return secagg.Config{}, 0, fmt.Errorf("%w: %d keys for %d participants", ErrSecureSetup, len(setup.Keys), len(ids))
	case p.QuantBits != 32:
		return secagg.Config{}, 0, fmt.Errorf("%w: %d-bit quantization (this agent does 32)", ErrSecureSetup, p.QuantBits)
	case len(p.RoundSeed) != 32:
		return secagg.Config{}, 0, fmt.Errorf("%w: round seed of %d bytes", ErrSecureSetup, len(p.RoundSeed))
	}
	cfg := secagg.Config{Round: t.RoundId, N: len(ids), Degree: int(p.Degree), Threshold: int(p.Threshold),
		Dim: setup.Dim, Clip: float64(p.ClipRange), MaxWeight: setup.MaxWeight, DeviceKeys: setup.Keys}
	copy(cfg.RoundSeed[:], p.RoundSeed)
	if err := cfg.Validate(); err != nil {
		return secagg.Config{}, 0, fmt.Errorf("%w: %w", ErrSecureSetup, err)
	}
	return cfg, uint32(idx), nil
}

// secureWaiter waits for the coordinator's messages of one round until
// the task's deadline.
type secureWaiter struct {
	s        *session
	round    uint64
	ch       *[secureStages]chan []byte
	deadline <-chan time.Time // nil: no deadline
}

func (s *session) secureWaiter(t *fedgepb.RoundTask) *secureWaiter {
	w := &secureWaiter{s: s, round: t.RoundId, ch: s.secure.get(t.RoundId)}
	if t.DeadlineUnixMs > 0 {
		w.deadline = s.a.o.Clock.After(max(time.UnixMilli(t.DeadlineUnixMs).Sub(s.a.o.Clock.Now()), 0))
	}
	return w
}

func (w *secureWaiter) wait(ctx context.Context, stage int) ([]byte, error) {
	select {
	case b := <-w.ch[stage]:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-w.deadline:
		return nil, fmt.Errorf("secure aggregation of round %d: no stage-%d message before the deadline", w.round, stage)
	}
}

// send publishes the device's message for a protocol stage.
func (w *secureWaiter) send(ctx context.Context, stage int, body []byte) {
	w.s.publishMsg(ctx, topics.KindSecAgg, fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG,
		&fedgepb.SecAggMessage{RoundId: w.round, Stage: uint32(stage) + 1, Body: body})
}

// runSecure trains t, runs the protocol up to the masked input and returns
// it as the task's result; the last two stages continue in the background
// on the session's context.
func (s *session) runSecure(ctx context.Context, t *fedgepb.RoundTask, m Model) (result, error) {
	var delta []float32
	var u *fedgepb.Update
	err := s.withSlot(ctx, func() error {
		var err error
		delta, u, err = s.runner.trainDelta(ctx, t, m)
		return err
	})
	if err != nil {
		return result{}, err
	}
	w := s.secureWaiter(t)
	body, err := w.wait(ctx, 0)
	if err != nil {
		return result{}, err
	}
	setup, err := DecodeSecureSetup(body, len(t.Secagg.GetParticipants()))
	if err != nil {
		return result{}, err
	}
	if setup.Dim != len(delta) {
		return result{}, fmt.Errorf("%w: dimension %d, the model has %d parameters", ErrSecureSetup, setup.Dim, len(delta))
	}
	cfg, id, err := SecureConfig(t, s.a.o.DeviceID, setup)
	if err != nil {
		return result{}, err
	}
	c, err := secagg.NewClient(cfg, id, s.a.o.Key, nil)
	if err != nil {
		return result{}, err
	}
	msg, err := c.AdvertiseKeys()
	if err != nil {
		return result{}, err
	}
	w.send(ctx, 0, msg)
	if body, err = w.wait(ctx, 1); err != nil {
		return result{}, err
	}
	if msg, err = c.ShareKeys(body); err != nil {
		return result{}, err
	}
	w.send(ctx, 1, msg)
	if body, err = w.wait(ctx, 2); err != nil {
		return result{}, err
	}
	masked, err := c.MaskedInput(body, delta, float64(u.SampleCount))
	if err != nil {
		return result{}, err
	}
	u.Codec = fedgepb.Codec_CODEC_SECAGG
	res := s.runner.withDelta(u, masked)
	sctx := s.ctx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.secure.forget(t.RoundId)
		if err := s.finishSecure(sctx, w, c); err != nil && sctx.Err() == nil {
			s.a.log.Info("secure aggregation stopped", zap.Uint64("round", t.RoundId), zap.Error(err))
		}
	}()
	return res, nil
}

// finishSecure answers the consistency check and the unmasking request.
func (s *session) finishSecure(ctx context.Context, w *secureWaiter, c *secagg.Client) error {
	body, err := w.wait(ctx, 3)
	if err != nil {
		return err
	}
	msg, err := c.ConsistencyCheck(body)
	if err != nil {
		return err
	}
	w.send(ctx, 3, msg)
	if body, err = w.wait(ctx, 4); err != nil {
		return err
	}
	if msg, err = c.Unmask(body); err != nil {
		return err
	}
	w.send(ctx, 4, msg)
	s.a.count(func(st *stats) { st.secureDone++ })
	return nil
}

// sealResult seals a task's result into a pending record.
func (s *session) sealResult(t *fedgepb.RoundTask, res result) (Pending, error) {
	a := s.a
	env, err := wire.SealEnvelope(a.o.Key, a.o.DeviceID, res.typ, res.msg, a.o.Clock.Now())
	if err != nil {
		return Pending{}, err
	}
	raw, err := env.Marshal()
	if err != nil {
		return Pending{}, err
	}
	return Pending{RoundID: t.RoundId, MessageID: env.MessageID, Envelope: raw, Blob: res.blob}, nil
}

// withSlot runs fn holding one of the shared training slots, if any.
func (s *session) withSlot(ctx context.Context, fn func() error) error {
	if slots := s.a.o.TrainSlots; slots != nil {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fn()
}
