// Package agent is the fedge edge agent as a library: its configuration,
// the stores it persists to (device state in Badger or memory, model
// versions on disk or in memory), the pure task state machine (Machine)
// and the driver (Agent) that wires a transport.Transport, the wire
// protocol's receive loop, the WASM runtime, the stores and a clock
// together.
//
// The driver is the same in production (MQTT, Badger, files, wall clock)
// and in the fleet simulator (in-memory bus and stores, virtual clock, one
// runtime.Host shared by thousands of agents). An agent holds a WASM
// instance only while it trains or evaluates.
//
// Trust: every inbound envelope is verified against the pinned coordinator
// key (wire.Serve), every model manifest's own signature too, and a model
// is activated only after its module and weights match the manifest's
// lengths and hashes, it compiles, and it declares the manifest's
// parameter count. Results are persisted before they are first published
// and published again on every (re)start and every ResendInterval until
// their Ack arrives.
package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Version is the agent version reported in Hello.
const Version = "0.1.0"

// ErrEnrollRefused is returned by Run when the coordinator refuses the
// device's enrollment.
var ErrEnrollRefused = errors.New("enrollment refused")

// BlobCache lets agents in one process share fetched model bytes by their
// SHA-256 (the simulator's thousands of agents fetch the same model). The
// agent still checks every byte against the signed manifest.
type BlobCache interface {
	Get(hash [32]byte) ([]byte, bool)
	Put(hash [32]byte, b []byte)
}

// Options configure an Agent. Fleet, DeviceID, Key, CoordinatorKey, State,
// Models, Host and Data are required.
type Options struct {
	Fleet          string
	DeviceID       string
	Key            ed25519.PrivateKey // the device's signing key
	CoordinatorKey ed25519.PublicKey  // pinned
	State          StateStore
	Models         ModelStore
	// Host compiles and runs models; it may be shared by many agents.
	Host *runtime.Host
	Data data.Source
	// Clock defaults to the wall clock.
	Clock clock.Clock
	Log   *zap.Logger
	// Tags are reported in capabilities (e.g. region).
	Tags map[string]string
	// EnrollmentToken makes a device that is not yet enrolled enroll.
	EnrollmentToken string
	// MemoryBytes is reported in capabilities.
	MemoryBytes uint64
	// Limits bound inbound messages (zero: wire defaults).
	Limits wire.Limits
	// Machine tunes resends and model waits.
	Machine MachineConfig
	// TickInterval is how often the state machine gets a tick (default 1s).
	TickInterval time.Duration
	// MaxTaskTime bounds one training or evaluation (default 30m).
	MaxTaskTime time.Duration
	// FetchTimeout bounds one model download (default 10m).
	FetchTimeout time.Duration
	// InlineLimit is the largest delta sent inline (default 192 KiB).
	InlineLimit int
	// TrainSlots, if not nil, bounds how many agents sharing it train at
	// once: a slot is taken (sent) before a task runs and released after.
	TrainSlots chan struct{}
	// Blobs, if not nil, shares fetched model bytes between agents.
	Blobs BlobCache
}

// Agent is one edge device's driver.
type Agent struct {
	o        Options
	log      *zap.Logger
	counters wire.Counters
	stats    stats
	// reconnected carries Reconnected signals to the running session.
	reconnected chan struct{}
}

// New checks opts and returns an agent; nothing happens until Run.
func New(opts Options) (*Agent, error) {
	if err := topics.ValidateID(opts.Fleet); err != nil {
		return nil, fmt.Errorf("agent: fleet: %w", err)
	}
	if err := topics.ValidateID(opts.DeviceID); err != nil {
		return nil, fmt.Errorf("agent: device id: %w", err)
	}
	switch {
	case len(opts.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("agent: device key missing")
	case len(opts.CoordinatorKey) != ed25519.PublicKeySize:
		return nil, errors.New("agent: coordinator key missing")
	case opts.State == nil || opts.Models == nil:
		return nil, errors.New("agent: state and model stores are required")
	case opts.Host == nil:
		return nil, errors.New("agent: runtime host is required")
	case opts.Data == nil || opts.Data.Len() == 0:
		return nil, errors.New("agent: a non-empty data source is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.Wall{}
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.TickInterval <= 0 {
		opts.TickInterval = time.Second
	}
	if opts.MaxTaskTime <= 0 {
		opts.MaxTaskTime = 30 * time.Minute
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 10 * time.Minute
	}
	if opts.InlineLimit <= 0 {
		opts.InlineLimit = DefaultInlineLimit
	}
	a := &Agent{o: opts, log: opts.Log.With(zap.String("device", opts.DeviceID)), reconnected: make(chan struct{}, 1)}
	a.stats.ignored = map[string]uint64{}
	return a, nil
}

// Reconnected tells a running agent that its transport has reconnected
// (transport.Transport does not report it; cmd/edgeagent watches the MQTT
// client's connection count). The agent then says hello again (its will
// announced it offline) and re-publishes unacknowledged results at once.
// It never blocks.
func (a *Agent) Reconnected() {
	select {
	case a.reconnected <- struct{}{}:
	default:
	}
}

// Counters returns the counts of inbound messages accepted and rejected by
// reason (bad signatures, wrong topics, ...).
func (a *Agent) Counters() *wire.Counters { return &a.counters }

// ActiveModel returns the active model, or ErrNoModel.
func (a *Agent) ActiveModel() (Model, error) { return ActiveModel(a.o.Models) }

// Will returns the last-will message to register when connecting: a
// Status{OFFLINE} envelope signed now.
func (a *Agent) Will() (*transport.Will, error) {
	st := &fedgepb.Status{DeviceId: a.o.DeviceID, State: fedgepb.DeviceState_DEVICE_STATE_OFFLINE}
	if ref, ok := a.activeRef(); ok {
		st.InstalledModelVersion = ref.Version
	}
	raw, err := wire.Seal(a.o.Key, a.o.DeviceID, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, st, a.o.Clock.Now())
	if err != nil {
		return nil, fmt.Errorf("agent will: %w", err)
	}
	return &transport.Will{Topic: topics.DeviceOut(a.o.Fleet, a.o.DeviceID, topics.KindStatus), Payload: raw}, nil
}

// Goodbye publishes a freshly signed offline status: on a clean shutdown
// the broker does not send the last will, and without it the device would
// stay online (and be selected) until the coordinator restarted.
func (a *Agent) Goodbye(ctx context.Context, tr transport.Transport) error {
	w, err := a.Will()
	if err != nil {
		return err
	}
	if err := tr.Publish(ctx, w.Topic, w.Payload, transport.PublishOptions{}); err != nil {
		return fmt.Errorf("agent goodbye: %w", err)
	}
	return nil
}

func (a *Agent) activeRef() (ModelRef, bool) {
	vs, err := a.o.Models.Versions()
	if err != nil || len(vs) == 0 {
		return ModelRef{}, false
	}
	return ModelRef{Version: vs[0].Version, WeightsHash: vs[0].WeightsHash}, true
}

// capabilities describes the device.
func (a *Agent) capabilities() *fedgepb.Capabilities {
	return &fedgepb.Capabilities{
		Arch: goruntime.GOARCH, MemoryBytes: a.o.MemoryBytes, SampleCount: uint64(a.o.Data.Len()),
		Tags: a.o.Tags, AbiVersions: abiVersions(), Features: []string{fedgepb.FeatureSecAgg},
	}
}

// abiVersions lists every model ABI version the host runs (1 to
// runtime.ABIVersion).
func abiVersions() []uint32 {
	vs := make([]uint32, 0, runtime.ABIVersion)
	for v := uint32(1); v <= runtime.ABIVersion; v++ {
		vs = append(vs, v)
	}
	return vs
}

// stats are the agent's own counters.
type stats struct {
	mu                                                   sync.Mutex
	installed, tasks, dropped, published, acked, refused uint64
	secureDone                                           uint64
	ignored                                              map[string]uint64
}

// Stats is a snapshot of an agent's counters.
type Stats struct {
	ModelsInstalled  uint64
	TasksRun         uint64
	TasksDropped     uint64            // refused or failed tasks
	ResultsPublished uint64            // publishes of results, resends included
	Acked            uint64            // results acknowledged
	AckedRefused     uint64            // of which the coordinator refused
	Ignored          map[string]uint64 // inputs not acted on, by kind ("manifest", "model", "ack", ...)
	SecureRounds     uint64            // secure aggregation rounds whose unmasking stage the agent answered
}

// Stats returns a snapshot of the agent's counters.
func (a *Agent) Stats() Stats {
	s := &a.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{ModelsInstalled: s.installed, TasksRun: s.tasks, TasksDropped: s.dropped,
		ResultsPublished: s.published, Acked: s.acked, AckedRefused: s.refused, SecureRounds: s.secureDone, Ignored: map[string]uint64{}}
	for k, v := range s.ignored {
		out.Ignored[k] = v
	}
	return out
}

func (a *Agent) count(f func(s *stats)) {
	a.stats.mu.Lock()
	f(&a.stats)
	a.stats.mu.Unlock()
}
