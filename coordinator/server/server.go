// Package server is the coordinator daemon as a library: the driver of the
// pure round state machine (coordinator/round). It owns the transport
// connection and the receive loop, the store, the clock, the device and
// model registries, the signing key and the blob transfers, and it serves
// the admin API (coordinator/admin.API).
//
// Everything that changes state runs on one goroutine, the loop of Run:
// inbound messages, clock ticks, finished blob fetches, server-side
// evaluations and admin commands. After every event the loop drains the
// machine's Ready: it persists the batch (one Store.Apply) BEFORE it
// publishes the batch's messages, then calls Advance. Time comes from a
// clock.Clock only, so a simulator can drive the server with a virtual
// clock and the memory transport.
//
// Config.FaultPoint is called at each stage of that loop (see the Fault*
// constants), so a test can kill the process there and check that a
// restart completes the round without losing or double-counting an
// acknowledged update.
package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/aggregation"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Fault points, in the order a Ready batch goes through them.
const (
	FaultAggregate     = "aggregate"      // in the aggregator, before the aggregate is applied
	FaultBeforePersist = "before-persist" // Ready in hand, nothing persisted
	FaultAfterPersist  = "after-persist"  // batch on disk, nothing published
	FaultMidPublish    = "mid-publish"    // half of the batch's messages published
	FaultAfterPublish  = "after-publish"  // all published, Advance not yet called
)

// Defaults of Config.
const (
	DefaultTickInterval  = time.Second
	DefaultMaxDeltaBytes = 64 << 20
	DefaultFetchTimeout  = 2 * time.Minute
	// maxFetches bounds the update blobs fetched at once.
	maxFetches = 16
)

// Config configures a Server. Fleet, Transport, Store, Key and Models are
// required.
type Config struct {
	Fleet     string
	Transport transport.Transport
	Store     store.Store
	// Clock defaults to the wall clock.
	Clock clock.Clock
	Log   *zap.Logger
	// Key signs every message and model manifest.
	Key    ed25519.PrivateKey
	Models *registry.Models
	// Credentials (optional) keeps the broker passwords issued by AddDevice;
	// BrokerCredentials (optional) is the live embedded broker's table.
	Credentials       *registry.CredentialFile
	BrokerCredentials *broker.Credentials
	// NonceKey is mixed into task nonces (random and secret in production).
	NonceKey []byte
	// Limits bound inbound envelopes (zero fields: wire defaults).
	Limits wire.Limits
	// TickInterval is how often the clock is read into a round.Tick.
	TickInterval time.Duration
	// MaxDeltaBytes bounds an encoded update sent as a blob.
	MaxDeltaBytes uint64
	// FetchTimeout bounds the fetch of one update blob.
	FetchTimeout time.Duration
	// BlobChunkSize is the chunk size of model blobs (0: blob default).
	BlobChunkSize int
	// EnrollTokenTTL is how long an enrollment token from AddDevice is
	// valid (0: 7 days).
	EnrollTokenTTL time.Duration
	// Evaluator, if set, evaluates each new model server-side for runs
	// that ask for it.
	Evaluator Evaluator
	// Metrics receives the Prometheus metrics (nil: not exported).
	Metrics *Metrics
	// FaultPoint, if set, is called at each Fault* stage (tests only).
	FaultPoint func(name string)
	// Inbox bounds the inbound queues and sets each device's rate.
	Inbox InboxConfig
	// BlobRequestRate bounds the model chunk bytes a device may ask for
	// per second (default 4 MiB/s after a burst of four models' worth;
	// negative: unlimited).
	BlobRequestRate float64
	// ProbeInterval, if set, is how often the coordinator publishes a
	// probe to itself through the broker; ProbeTimeout (default 5 s) is
	// how long a probe may take before Health reports the coordinator deaf.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// StallTimeout is how long messages may wait in the inbox, or the loop
	// be busy with one event, before Health reports that the coordinator
	// cannot keep up (default 30 s).
	StallTimeout time.Duration
}

// Evaluator evaluates a model's weights on a server-side test set.
type Evaluator interface {
	Evaluate(ctx context.Context, model string, weights []float32) (loss, accuracy float64, err error)
}

// Server is the coordinator daemon. Create it with New and start it with
// Run; the admin methods may be called from any goroutine while Run runs.
type Server struct {
	cfg     Config
	log     *zap.Logger
	clk     clock.Clock
	st      store.Store
	tr      transport.Transport
	devices *registry.Devices
	keys    wire.KeyFunc
	limits  wire.Limits
	wireCnt *wire.Counters
	metrics *Metrics
	strat   *strategies

	cmds    chan command
	events  chan func(ctx context.Context) error // results of background work, run on the loop
	started chan struct{}
	in      *inbox
	health  *health
	// blobSender is the loop's sender, for the metrics goroutine.
	blobSender atomic.Pointer[blob.Sender]
	rejLog     *zap.Logger // rate-limited logger for refused messages

	// Owned by the loop goroutine.
	m         *round.Machine
	sender    *blob.Sender
	receiver  *blob.Receiver
	fetching  map[string]bool
	fetchSem  chan struct{}
	offered   []blob.ID // weights blobs offered, oldest first
	lastCount map[string]uint64
	online    map[string]bool
	retryTold map[string]time.Time // devices last told "retry later"
	evalDone  map[uint64]bool
	restoring bool // the first flush after restore republishes old acks
	seal      func(typ fedgepb.PayloadType, msg protoMessage) ([]byte, error)

	// Secure aggregation (secure.go).
	sec          *secureRound          // the protocol of the current secure round
	secRun       uint64                // the active run, if it is secure
	secDim       map[uint64]int        // round -> model dimension, noted when its aggregator is made
	secFailed    []round.CloseTraining // secure rounds that could not start
	restoringAgg bool                  // the machine is refolding stored updates
}

type command struct {
	fn   func(ctx context.Context) error
	done chan error
}

// New checks cfg and loads the device registry.
func New(ctx context.Context, cfg Config) (*Server, error) {
	switch {
	case topics.ValidateID(cfg.Fleet) != nil:
		return nil, fmt.Errorf("server: fleet: %w", topics.ValidateID(cfg.Fleet))
	case cfg.Transport == nil, cfg.Store == nil, cfg.Models == nil:
		return nil, errors.New("server: Transport, Store and Models are required")
	case len(cfg.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("server: Key must be an Ed25519 private key")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Wall{}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.MaxDeltaBytes == 0 {
		cfg.MaxDeltaBytes = DefaultMaxDeltaBytes
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.EnrollTokenTTL <= 0 {
		cfg.EnrollTokenTTL = 7 * 24 * time.Hour
	}
	devs, err := registry.NewDevices(ctx, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{
		cfg: cfg, log: cfg.Log, clk: cfg.Clock, st: cfg.Store, tr: cfg.Transport,
		devices: devs, keys: devs.KeyFunc(), limits: cfg.Limits, wireCnt: &wire.Counters{},
		metrics: cfg.Metrics, cmds: make(chan command), events: make(chan func(context.Context) error, 64),
		started:  make(chan struct{}),
		fetching: map[string]bool{}, fetchSem: make(chan struct{}, maxFetches),
		lastCount: map[string]uint64{}, online: map[string]bool{}, evalDone: map[uint64]bool{}, retryTold: map[string]time.Time{},
		secDim: map[uint64]int{},
	}
	if cfg.BlobRequestRate == 0 {
		cfg.BlobRequestRate = 4 << 20
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	s.cfg = cfg
	s.in = newInbox(cfg.Inbox, cfg.Clock.Now)
	s.health = newHealth(cfg.Clock, cfg.Log)
	s.rejLog = sampled(cfg.Log)
	s.strat = &strategies{beforeFinish: func() { s.fault(FaultAggregate) }}
	s.strat.secure = func(st aggregation.StreamingStrategy, roundID uint64, dim int) round.Aggregator {
		s.secDim[roundID] = dim
		return &secureAgg{s: s, st: st, round: roundID, before: s.strat.beforeFinish}
	}
	s.strat.stored = s.storedRun
	s.strat.warn = func(msg string) { s.log.Warn(msg) }
	s.seal = s.sealWith
	return s, nil
}

// WireCounters are the envelope-level acceptance and rejection counts.
func (s *Server) WireCounters() *wire.Counters { return s.wireCnt }

func (s *Server) fault(name string) {
	if s.cfg.FaultPoint != nil {
		s.cfg.FaultPoint(name)
	}
}

func (s *Server) nowMs() int64 { return s.clk.Now().UnixMilli() }

// Run serves until ctx is done (returning nil) or a persistence failure
// (returning the error; restart the process to recover from the store).
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.restore(ctx); err != nil {
		return err
	}
	s.sender = blob.NewSender(s.tr, blob.Coordinator(s.cfg.Fleet), blob.SenderConfig{
		ChunkSize: s.cfg.BlobChunkSize, Open: s.openBlobRequest, RequesterRate: s.cfg.BlobRequestRate, Sent: s.metrics.bytesOut,
	}, s.log.Named("blob"))
	s.blobSender.Store(s.sender)
	waitSender, err := s.sender.Start(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer func() { _ = waitSender() }()
	s.receiver = blob.NewReceiver(s.tr, blob.ReceiverConfig{Limits: blob.Limits{MaxBlobSize: s.cfg.MaxDeltaBytes},
		Seal: wire.BlobRequestSealer(s.cfg.Key, wire.CoordinatorID, s.clk.Now)}, s.log.Named("blob"))

	// Each subscription is drained at once into the inbox, whose queues
	// have a policy per kind of message (inbox.go); the transport's own
	// queues never fill.
	for _, kind := range inKindNames {
		sub, err := s.tr.Subscribe(ctx, topics.FleetRoot(s.cfg.Fleet)+"/dev/+/out/"+kind)
		if err != nil {
			return fmt.Errorf("server: subscribe %s: %w", kind, err)
		}
		defer func() { _ = sub.Unsubscribe(context.WithoutCancel(ctx)) }()
		go s.in.drain(sub, func() {
			if ctx.Err() == nil {
				s.in.fail(fmt.Errorf("%w: subscription %s closed (transport closed)", errFatal, kind))
			}
		})
	}
	if s.cfg.ProbeInterval > 0 {
		stopProbe, err := s.startProbe(ctx)
		if err != nil {
			return err
		}
		defer stopProbe()
	}
	if err := s.secureAbortLost(ctx); err != nil {
		return err
	}
	s.restoring = true
	if err := s.flush(ctx); err != nil {
		return err
	}
	s.restoring = false
	s.maybeEvaluate(ctx)
	close(s.started)
	s.log.Info("coordinator serving", zap.String("fleet", s.cfg.Fleet), zap.Uint64("model_version", s.m.Status().ModelVersion))

	tick := s.clk.After(s.cfg.TickInterval)
	for {
		var err error
		s.health.idle()
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			s.health.busy()
			tick = s.clk.After(s.cfg.TickInterval)
			s.in.forget()
			err = s.secureTick(ctx)
			if err == nil || !errors.Is(err, errFatal) {
				err = errors.Join(err, s.step(ctx, round.Tick{NowUnixMs: s.nowMs()}))
			}
		case <-s.in.ready:
			s.health.busy()
			err = s.inbound(ctx)
		case fn := <-s.events:
			s.health.busy()
			err = fn(ctx)
		case c := <-s.cmds:
			s.health.busy()
			cerr := c.fn(ctx)
			c.done <- cerr
			if errors.Is(cerr, errFatal) {
				err = cerr
			} else {
				err = s.flush(ctx)
			}
		}
		if errors.Is(err, errFatal) {
			return err
		}
		if err != nil {
			s.log.Warn("event failed", zap.Error(err))
		}
	}
}

// errFatal marks errors after which the loop must stop: the machine has
// moved on and its batch could not be persisted.
var errFatal = errors.New("fatal")

// inboundBatch is how many inbound messages the loop handles before it
// looks at ticks, commands and background results again.
const inboundBatch = 64

// inbound handles up to inboundBatch messages from the inbox, then tells
// the devices whose results were shed to resend them later.
func (s *Server) inbound(ctx context.Context) error {
	if err := s.in.err(); err != nil {
		return err
	}
	for range inboundBatch {
		m, ok := s.in.pop()
		if !ok {
			break
		}
		if err := s.handle(ctx, m); err != nil {
			return err
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
	}
	s.in.more()
	return s.retryLater(ctx)
}

// restore rebuilds the machine from the store and marks the devices that
// were online as online again (their wills arrive if they left meanwhile).
func (s *Server) restore(ctx context.Context) error {
	snap, err := round.LoadSnapshot(ctx, s.st, s.nowMs())
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.restoringAgg = true
	m, err := round.New(s.machineConfig(), snap)
	s.restoringAgg = false
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.m = m
	s.sec = nil
	s.lastCount = map[string]uint64{}
	devs, err := s.st.Devices(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	for _, d := range devs {
		if d.Online && s.devices.Approved(d.DeviceId) {
			s.online[d.DeviceId] = true
			if err := s.m.Step(round.DeviceOnline{Device: d.DeviceId, Caps: d.Capabilities}); err != nil {
				return fmt.Errorf("server: restore presence of %s: %w", d.DeviceId, err)
			}
		}
	}
	s.metrics.setOnline(len(s.online))
	return nil
}

func (s *Server) machineConfig() round.Config {
	return round.Config{
		NewAggregator: s.strat.newAggregator(),
		Signer:        manifestSigner{s.cfg.Key},
		Decode:        decodeDelta,
		NonceKey:      s.cfg.NonceKey,
	}
}

// step feeds one event to the machine and drains its Ready.
func (s *Server) step(ctx context.Context, ev round.Event) error {
	if err := s.m.Step(ev); err != nil {
		return fmt.Errorf("step %T: %w", ev, err)
	}
	s.countRejections()
	return s.flush(ctx)
}

// do runs fn on the loop goroutine and waits for it.
func (s *Server) do(ctx context.Context, fn func(ctx context.Context) error) error {
	select {
	case <-s.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	c := command{fn: fn, done: make(chan error, 1)}
	select {
	case s.cmds <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// post queues fn to run on the loop; it gives up when ctx is done.
func (s *Server) post(ctx context.Context, fn func(ctx context.Context) error) {
	select {
	case s.events <- fn:
	case <-ctx.Done():
	}
}

// Ready waits until Run has restored its state and started serving.
func (s *Server) Ready(ctx context.Context) error {
	select {
	case <-s.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
