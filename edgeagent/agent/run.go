package agent

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Enrollment retry backoff bounds.
const (
	enrollBackoffMin = 2 * time.Second
	enrollBackoffMax = 5 * time.Minute
)

// dedupSize is the receive loops' de-duplication ring size.
const dedupSize = 64

// enrollEv is a driver-level event: an enrollment response arrived.
type enrollEv struct{ r *fedgepb.EnrollResponse }

func (enrollEv) event() {}

// session is the state of one Run: one connection's worth of driver.
type session struct {
	ctx     context.Context // the session's, for work outliving a task
	a       *Agent
	tr      transport.Transport
	m       *Machine
	events  chan Event
	recv    *blob.Receiver
	send    *blob.Sender
	runner  taskRunner
	offered map[uint64]blob.ID
	cancels map[uint64]context.CancelFunc
	secure  *secureInbox
	wg      sync.WaitGroup

	needEnroll    bool
	enrollBackoff time.Duration
	enrollNext    time.Time
}

// Run connects the agent's logic to tr (already connected, with the will
// from Will registered) until ctx is done (returning nil) or the transport
// closes. It restores its state from the stores, so calling Run again
// after a reconnect or a restart resumes where the agent stopped:
// unacknowledged results are published again and a persisted task runs
// again from its base model.
func (a *Agent) Run(ctx context.Context, tr transport.Transport) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := a.newSession(tr)
	if err != nil {
		return err
	}
	s.ctx = ctx
	defer s.wg.Wait()
	defer cancel()
	keys := wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: a.o.CoordinatorKey})
	// A small de-duplication ring: a device receives few messages, and the
	// state machine makes every redelivery harmless anyway; the default
	// ring would cost ~250 KB per agent in a simulated fleet.
	cfg := wire.ServeConfig{Limits: a.o.Limits, Keys: keys, Log: a.log, Counters: &a.counters, DedupSize: dedupSize}
	serveDone := make(chan error, 2)
	for _, filter := range []string{topics.DeviceIn(a.o.Fleet, a.o.DeviceID, "+"), topics.Manifest(a.o.Fleet)} {
		sub, err := tr.Subscribe(ctx, filter)
		if err != nil {
			return fmt.Errorf("agent subscribe %s: %w", filter, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			serveDone <- wire.Serve(ctx, sub, cfg, s.handle)
		}()
	}
	wait, err := s.send.Start(ctx)
	if err != nil {
		return fmt.Errorf("agent blob sender: %w", err)
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = wait() }()

	now := a.o.Clock.Now()
	s.hello(ctx)
	if s.needEnroll {
		s.enroll(ctx, now)
	}
	if err := s.apply(ctx, s.m.Step(EvStart{Now: now})); err != nil {
		return err
	}
	tick := a.o.Clock.After(a.o.TickInterval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveDone:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = transport.ErrClosed
			}
			return fmt.Errorf("agent receive loop: %w", err)
		case <-a.reconnected:
			now := a.o.Clock.Now()
			s.hello(ctx)
			if err := s.apply(ctx, s.m.Step(EvStart{Now: now})); err != nil {
				return err
			}
		case now := <-tick:
			tick = a.o.Clock.After(a.o.TickInterval)
			if s.needEnroll && !now.Before(s.enrollNext) {
				s.enroll(ctx, now)
			}
			if err := s.apply(ctx, s.m.Step(EvTick{Now: now})); err != nil {
				return err
			}
		case ev := <-s.events:
			if ctx.Err() != nil {
				return nil
			}
			if e, ok := ev.(enrollEv); ok {
				if err := s.enrolled(ctx, e.r); err != nil {
					return err
				}
				continue
			}
			if err := s.apply(ctx, s.m.Step(ev)); err != nil {
				return err
			}
		}
	}
}

func (a *Agent) newSession(tr transport.Transport) (*session, error) {
	vs, err := a.o.Models.Versions()
	if err != nil {
		return nil, fmt.Errorf("agent: read models: %w", err)
	}
	refs := make([]ModelRef, len(vs))
	for i, v := range vs {
		refs[i] = ModelRef{Version: v.Version, WeightsHash: v.WeightsHash}
	}
	task, err := a.o.State.Task()
	if err != nil {
		return nil, fmt.Errorf("agent: read task: %w", err)
	}
	pending, err := a.o.State.Pending()
	if err != nil {
		return nil, fmt.Errorf("agent: read pending results: %w", err)
	}
	done, err := a.o.State.Done()
	if err != nil {
		return nil, fmt.Errorf("agent: read done rounds: %w", err)
	}
	enrolled, err := a.o.State.Enrolled()
	if err != nil {
		return nil, fmt.Errorf("agent: read enrollment: %w", err)
	}
	s := &session{
		a: a, tr: tr,
		m:      NewMachine(a.o.Machine, refs, task, pending, done),
		events: make(chan Event, 64),
		recv: blob.NewReceiver(tr, blob.ReceiverConfig{Self: a.o.DeviceID,
			Seal: wire.BlobRequestSealer(a.o.Key, a.o.DeviceID, a.o.Clock.Now)}, a.log),
		send: blob.NewSender(tr, blob.Device(a.o.Fleet, a.o.DeviceID), blob.SenderConfig{Workers: 1,
			Open: wire.BlobRequestOpener(a.o.Limits, wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: a.o.CoordinatorKey}), nil)}, a.log),
		offered: map[uint64]blob.ID{},
		cancels: map[uint64]context.CancelFunc{},
		secure:  newSecureInbox(),
		runner: taskRunner{host: a.o.Host, src: a.o.Data, clock: a.o.Clock, deviceID: a.o.DeviceID,
			inlineLimit: a.o.InlineLimit},
		needEnroll:    a.o.EnrollmentToken != "" && !enrolled,
		enrollBackoff: enrollBackoffMin,
	}
	return s, nil
}

// post hands an event to the main loop unless the session is over.
func (s *session) post(ctx context.Context, ev Event) {
	select {
	case s.events <- ev:
	case <-ctx.Done():
	}
}

// handle turns a verified inbound message into an event.
func (s *session) handle(ctx context.Context, in wire.Inbound) error {
	var ev Event
	switch m := in.Env.Msg.(type) {
	case *fedgepb.ModelManifest:
		ev = EvManifest{Manifest: m}
	case *fedgepb.RoundTask:
		ev = EvTask{Task: m, Now: s.a.o.Clock.Now()}
	case *fedgepb.Ack:
		ev = EvAck{Ack: m}
	case *fedgepb.EnrollResponse:
		ev = enrollEv{r: m}
	case *fedgepb.SecAggMessage:
		if !s.secure.deliver(m) {
			s.a.count(func(st *stats) { st.ignored["secagg"]++ })
		}
		return nil
	default:
		return nil // control messages carry nothing this agent acts on
	}
	s.post(ctx, ev)
	return ctx.Err()
}

// publishMsg seals and publishes a device message; failures are logged
// (the caller's resend logic, or the next connect, repeats what matters).
func (s *session) publishMsg(ctx context.Context, kind string, typ fedgepb.PayloadType, msg wireMsg) {
	a := s.a
	raw, err := wire.Seal(a.o.Key, a.o.DeviceID, typ, msg, a.o.Clock.Now())
	if err == nil {
		err = s.tr.Publish(ctx, topics.DeviceOut(a.o.Fleet, a.o.DeviceID, kind), raw, transport.PublishOptions{})
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("publish failed", zap.Stringer("type", typ), zap.Error(err))
	}
}

func (s *session) hello(ctx context.Context) {
	h := &fedgepb.Hello{DeviceId: s.a.o.DeviceID, AgentVersion: Version, Capabilities: s.a.capabilities()}
	if ref, ok := s.m.Active(); ok {
		h.InstalledModelVersion, h.InstalledModelHash = ref.Version, ref.WeightsHash
	}
	s.publishMsg(ctx, topics.KindStatus, fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, h)
}

func (s *session) enroll(ctx context.Context, now time.Time) {
	a := s.a
	r := &fedgepb.EnrollRequest{DeviceId: a.o.DeviceID, PublicKey: a.o.Key.Public().(ed25519.PublicKey),
		EnrollmentToken: a.o.EnrollmentToken, Capabilities: a.capabilities()}
	s.publishMsg(ctx, topics.KindEnroll, fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST, r)
	s.enrollNext = now.Add(s.enrollBackoff)
	s.enrollBackoff = min(2*s.enrollBackoff, enrollBackoffMax)
}

func (s *session) enrolled(ctx context.Context, r *fedgepb.EnrollResponse) error {
	switch {
	case r.Accepted:
		if err := s.a.o.State.SetEnrolled(); err != nil {
			return fmt.Errorf("agent: persist enrollment: %w", err)
		}
		if s.needEnroll {
			s.a.log.Info("enrolled")
			s.needEnroll = false
			s.hello(ctx)
		}
	case r.PendingApproval:
		s.a.log.Info("enrollment pending approval", zap.String("reason", r.Reason))
	default:
		if !s.needEnroll {
			return nil // a stale refusal after acceptance
		}
		return fmt.Errorf("agent %s: %w: %s", s.a.o.DeviceID, ErrEnrollRefused, r.Reason)
	}
	return nil
}
