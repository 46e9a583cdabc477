// Package fleet runs a simulated fleet: the real coordinator
// (coordinator/server) and one real edge agent (edgeagent/agent) per
// simulated device, in one process, over the in-memory transport or the
// embedded MQTT broker, under a virtual or the wall clock. Only the
// transport, the clock and the data source differ from production
// (ARCHITECTURE.md, principle 2).
//
// Under the virtual clock a scheduler owns time. It advances the clock only
// when the fleet is quiescent at the current instant: every device that got
// a task has answered it, every update delivered to the coordinator has
// been acknowledged, every device has installed the latest announced model
// and the coordinator is not evaluating. Training then takes no virtual
// time by itself: a device's update is held by its transport and delivered
// when the device's simulated compute time (samples / speed from
// simulations/behavior) and link time have passed. Updates due at the same
// instant are delivered one at a time in device order, each acknowledged
// before the next, so the coordinator folds them in the same order on
// every run and the same seed gives byte-identical metrics.jsonl (wall-time
// fields excepted).
//
// Device behaviour comes from simulations/behavior: unavailable and
// dropping devices never receive the task they were selected for (the
// coordinator counts them as selected; metrics.jsonl as dropped); label
// flippers train on flipped labels; sign-flip, scale and noise attackers
// rewrite their sealed update and sign it again with their own key (which
// a malicious device holds), so these work only for inline float32 or
// float16 deltas. Devices whose update arrives after the round deadline
// are acknowledged as late by the coordinator and not aggregated.
//
// Over the broker every device is a live MQTT session, and the fleet does
// for its agents what cmd/edgeagent does for its one: one goroutine
// watches every client's connection count and tells an agent that
// reconnected, so that it says hello again (its will announced it offline)
// and re-publishes what was not acknowledged. A scenario's reconnect_storm
// uses this: once the coordinator has published the last task of the
// storm's round, the chosen devices' connections are cut without a
// DISCONNECT (mqtt.Client.DropConnection), at seeded offsets spread over
// the storm's wall-time window; the broker sees lost connections and
// publishes the wills, and the clients reconnect by themselves. Result.Storm
// reports the storm (how low devices_online fell, when every client was
// connected again and when the coordinator counted the whole fleet online
// again, the inbox's peak); Result.Health is the coordinator's health once
// its inbox drained after the last round. Which devices drop and when is
// fixed by the seed; how the reconnections interleave with the round is
// not (paho reconnects on the wall clock): under the virtual clock a round
// that starts while devices are still offline at the coordinator selects
// among fewer, so a storm run may not replay byte for byte.
//
// Byte counts in metrics.jsonl are protocol bytes: envelopes of tasks,
// acknowledgements, announcements, manifests and updates, plus the model
// weights (and, once per device, the module) each device installs and the
// delta blobs the coordinator fetches; not MQTT framing nor blob chunk
// requests, whose number depends on timing.
package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/behavior"
	"github.com/fedge-dev/fedge/simulations/report"
	"github.com/fedge-dev/fedge/simulations/scenario"
)

// FleetID is the fleet id of every simulation.
const FleetID = "sim"

// ErrUnsupported is wrapped when a scenario asks for something the
// coordinator or agent cannot do yet.
var ErrUnsupported = errors.New("not supported")

// Options tune a run; the scenario says what is simulated.
type Options struct {
	// Out is the output directory (metrics.jsonl, summary.json, plots).
	Out string
	// MNISTDir holds the MNIST IDX files; empty: located with MNISTDir.
	MNISTDir string
	// MNIST, if set, is the already loaded MNIST training and test sets
	// (a process running several fleets loads them once).
	MNIST *MNISTSets
	// Log receives the simulator's, coordinator's and agents' logs
	// (nil: none).
	Log *zap.Logger
	// Progress, if set, shows a progress bar (or plain lines) of rounds.
	Progress io.Writer
	// Trainers bounds how many devices train at once (default GOMAXPROCS).
	Trainers int
	// Stall is how long (wall time) the scheduler waits for an answer it
	// expects, while no device is training, before it gives up on it,
	// logs it and moves on (default 2m).
	Stall time.Duration
	// Baseline, if set to a strategy other than the scenario's, runs the
	// same scenario with it first (into Out/baseline-NAME) and puts that
	// run's summary in summary.json as "baseline": how an attack fares
	// against plain FedAvg beside the robust strategy.
	Baseline string
}

// Result is what a run produced.
type Result struct {
	Summary report.Summary
	Rounds  []report.Round
	Plots   []string
	// Stalls counts the times the scheduler gave up waiting (0 in a
	// healthy run; a run with stalls may not be reproducible).
	Stalls int
	// DP is the run's differential privacy at its end (nil without DP).
	DP *admin.DPDoc
	// Storm reports the scenario's reconnect storm (nil without one).
	Storm *StormReport
	// Health is the coordinator's health at the end, once its inbox had
	// drained (or DrainWait reached Options.Stall); DrainWait is how long
	// that took after the last round.
	Health    server.Health
	DrainWait time.Duration
	// Broker is the embedded broker's counters at the end (nil over the
	// in-memory transport).
	Broker *broker.Stats
}

// Fleet is one simulation in progress.
type Fleet struct {
	sc      *scenario.Scenario
	opts    Options
	log     *zap.Logger
	virtual *clock.Virtual // nil under the wall clock
	clk     clock.Clock
	srvClk  *countingClock
	start   time.Time
	profile behavior.Profile
	limits  wire.Limits
	track   *tracker

	manifestTopic string
	index         map[string]int
	devices       []device
	// Guarded by track.mu.
	taskInfo   map[devRound]taskInfo
	modelBytes int

	heldMu sync.Mutex
	queue  heldQueue
	seq    uint64

	srv      *server.Server
	eval     *evaluator
	slots    chan struct{} // the agents' training slots
	stalls   int
	baseline *report.Summary
	plain    *report.Summary // the plain run beside a secure one
	secure   *secureSim      // nil unless the scenario is secure
	runCtx   context.Context // the run's context, for the storm
	storm    stormState      // guarded by track.mu
	pubs     pubTimes        // the coordinator's publishes
	// For warming the agents' shared model cache.
	st     store.Store
	models *registry.Models
	blobs  *blobCache
}

type device struct {
	id          string
	key         ed25519.PrivateKey
	samples     int
	attack      behavior.Attack
	updateTopic string
	statusTopic string
	raw         transport.Transport // the device's own connection
	client      *mqtt.Client        // raw over the broker, nil over memory
	agent       *agent.Agent
	// Guarded by track.mu.
	connected bool
	installed uint64
}

// connected counts connected devices; call with track.mu held.
func (f *Fleet) connected() int {
	n := 0
	for i := range f.devices {
		if f.devices[i].connected {
			n++
		}
	}
	return n
}

// Run simulates sc to the end and writes its report to opts.Out.
func Run(ctx context.Context, sc *scenario.Scenario, opts Options) (*Result, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if sc.Strategy.DPNoise > 0 && sc.Secure.Enabled {
		return nil, fmt.Errorf("fleet: differential privacy with secure aggregation: %w by the coordinator yet (DP needs uniformly weighted updates)", ErrUnsupported)
	}
	if opts.Out == "" {
		return nil, errors.New("fleet: an output directory is required")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Trainers <= 0 {
		opts.Trainers = goruntime.GOMAXPROCS(0)
	}
	if opts.Stall <= 0 {
		opts.Stall = 2 * time.Minute
	}
	attack, err := behavior.ParseAttack(sc.Attackers.Kind)
	if err != nil {
		return nil, err
	}
	var baseline *report.Summary
	if b := opts.Baseline; b != "" && b != sc.Strategy.Name {
		bsc := *sc
		bsc.Strategy.Name = b
		if baseline, err = runBaseline(ctx, &bsc, &opts, b); err != nil {
			return nil, err
		}
	}
	var plain *report.Summary
	if sc.Secure.Enabled {
		// The same scenario without secure aggregation: same seed, rounds
		// and dropping devices.
		bsc := *sc
		bsc.Secure.Enabled = false
		bsc.Name = sc.Name + "-plain"
		if plain, err = runBaseline(ctx, &bsc, &opts, "plain"); err != nil {
			return nil, err
		}
	}
	f := &Fleet{baseline: baseline, plain: plain,
		sc: sc, opts: opts, log: opts.Log.Named("fleetsim"), track: newTracker(),
		manifestTopic: topics.Manifest(FleetID), index: map[string]int{},
		taskInfo: map[devRound]taskInfo{}, limits: wire.DefaultLimits(),
		profile: behavior.Profile{
			Seed: sc.Seed, SpeedMedian: sc.Devices.SpeedMedian, SpeedSigma: sc.Devices.SpeedSigma,
			Availability: sc.Devices.Availability, Diurnal: sc.Devices.Diurnal, Dropout: sc.Devices.Dropout,
			BandwidthBps: sc.Devices.BandwidthBps, Latency: sc.Devices.Latency,
			AttackFraction: sc.Attackers.Fraction, Attack: attack, AttackScale: sc.Attackers.Scale,
		},
	}
	if err := f.profile.Validate(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	f.secureSetup()
	// A fixed epoch: virtual runs must not depend on when they ran.
	f.start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if sc.Clock == "virtual" {
		f.virtual = clock.NewVirtual(f.start)
		f.clk = f.virtual
	} else {
		f.clk = clock.Wall{}
		f.start = time.Now()
	}
	f.srvClk = &countingClock{Clock: f.clk}
	f.storm = stormState{round: sc.ReconnectStorm.Round, done: make(chan struct{})}
	return f.run(ctx)
}

func (f *Fleet) run(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.runCtx = ctx
	wallStart := time.Now()
	sc := f.sc

	train, test, err := loadData(sc, f.opts.MNISTDir, f.opts.MNIST)
	if err != nil {
		return nil, err
	}
	parts, err := partitionData(sc, train)
	if err != nil {
		return nil, err
	}
	host, err := runtime.NewHost(ctx, runtime.Config{GrantWASI: true})
	if err != nil {
		return nil, fmt.Errorf("fleet: runtime: %w", err)
	}
	defer host.Close(context.WithoutCancel(ctx))
	modDir, err := os.MkdirTemp("", "fleetsim-models-*")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	defer os.RemoveAll(modDir)
	models, err := registry.NewModels(modDir, host)
	if err != nil {
		return nil, fmt.Errorf("fleet: models: %w", err)
	}
	modelName, err := registerModel(ctx, models, sc.Model)
	if err != nil {
		return nil, err
	}

	coordKey := seededKey(sc.Seed, "coordinator", 0)
	st := store.NewMemory()
	defer st.Close()
	f.st, f.models, f.blobs = st, models, &blobCache{m: map[[32]byte][]byte{}}
	attacks := f.profile.Attackers(sc.Clients)
	var batch store.Batch
	f.devices = make([]device, sc.Clients)
	for i := range f.devices {
		id := fmt.Sprintf("d%06d", i)
		d := &f.devices[i]
		*d = device{
			id: id, key: seededKey(sc.Seed, "device", uint64(i)), samples: len(parts[i]), attack: attacks[i],
			updateTopic: topics.DeviceOut(FleetID, id, topics.KindUpdate),
			statusTopic: topics.DeviceOut(FleetID, id, topics.KindStatus),
		}
		f.index[id] = i
		batch.Devices = append(batch.Devices, &store.Device{
			DeviceId: id, PublicKey: d.key.Public().(ed25519.PublicKey),
			EnrollState: fedgepb.EnrollState_ENROLL_STATE_APPROVED, EnrolledUnixMs: f.start.UnixMilli(),
		})
	}
	if err := st.Apply(ctx, &batch); err != nil {
		return nil, fmt.Errorf("fleet: register devices: %w", err)
	}

	net, err := newNetwork(ctx, sc.Transport, f.log)
	if err != nil {
		return nil, err
	}
	defer net.close()
	coordTr, err := net.coordinator(ctx)
	if err != nil {
		return nil, err
	}
	f.eval = &evaluator{inner: server.TestSetEvaluator{Models: models, Data: test}}
	nonceKey := sha256.Sum256([]byte(fmt.Sprintf("fleetsim nonce key %d", sc.Seed)))
	// Over the broker under the wall clock the coordinator probes the
	// broker every second, as a deployment would, so that Result.Health
	// says whether it still hears it (under the virtual clock probes would
	// be timers the scheduler steps through).
	var probe time.Duration
	if sc.Transport == "broker" && f.virtual == nil {
		probe = time.Second
	}
	srv, err := server.New(ctx, server.Config{
		Fleet: FleetID, Transport: &coordTransport{Transport: f.secureCoord(coordTr), f: f}, Store: st, Clock: f.srvClk,
		Log: f.opts.Log.Named("coordinator"), Key: coordKey, Models: models, NonceKey: nonceKey[:],
		Evaluator: f.eval, ProbeInterval: probe,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: coordinator: %w", err)
	}
	f.srv = srv
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	srvErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); srvErr <- srv.Run(ctx) }()
	if err := srv.Ready(ctx); err != nil {
		return nil, fmt.Errorf("fleet: coordinator: %w", err)
	}

	if err := f.startAgents(ctx, &wg, net, host, train, parts, coordKey); err != nil {
		return nil, err
	}
	f.reconnectWatch(ctx, &wg)
	if err := f.waitOnline(ctx, srvErr); err != nil {
		return nil, err
	}
	req, err := startRequest(sc, modelName, f.expectedSelected())
	if err != nil {
		return nil, err
	}
	f.secureRequest(&req)
	dpRequest(sc, &req)
	if f.virtual == nil {
		f.start = time.Now() // fleet time under the wall clock counts from the run's start
	}
	if _, err := srv.StartRun(ctx, "fleetsim", req); err != nil {
		return nil, fmt.Errorf("fleet: start run: %w", err)
	}
	w, err := report.Create(f.opts.Out, sc.TargetAccuracy)
	if err != nil {
		return nil, err
	}
	rounds, err := f.schedule(ctx, w, wallStart, srvErr)
	if err != nil {
		return nil, err
	}
	storm := f.stormReport(ctx)
	health, drainWait := f.drained(ctx)
	base := f.baseline
	if f.plain != nil {
		p := *f.plain
		p.Strategy = "plain " + p.Strategy
		base = &p
	}
	sum, plots, err := w.Finish(report.Summary{
		Scenario: sc.Name, Seed: sc.Seed, Model: sc.Model, Strategy: sc.Strategy.Name, Clients: sc.Clients,
		Baseline: base,
	})
	if err != nil {
		return nil, err
	}
	if f.plain != nil {
		if err := writeSecureSummary(f.opts.Out, sc, sum, f.plain); err != nil {
			return nil, err
		}
	}
	res := &Result{Summary: sum, Rounds: rounds, Plots: plots, Stalls: f.stalls, Storm: storm, Health: health, DrainWait: drainWait}
	if bn, ok := net.(*brokerNet); ok {
		st := bn.b.Stats()
		res.Broker = &st
	}
	if req.DPNoiseMultiplier > 0 {
		st, err := srv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("fleet: final status: %w", err)
		}
		if st.Run == nil || st.Run.DP == nil {
			return nil, errors.New("fleet: the coordinator reports no differential privacy for a DP run")
		}
		res.DP = st.Run.DP
		if err := writeJSON(f.opts.Out, "summary.json", DPSummary{Summary: sum, DP: st.Run.DP}); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// drained waits until the coordinator's inbox is empty (at most
// Options.Stall) and returns its health then and the time waited.
func (f *Fleet) drained(ctx context.Context) (server.Health, time.Duration) {
	start := time.Now()
	for {
		h := f.srv.Health()
		empty := h.Inbox.OldestMs == 0
		for _, n := range h.Inbox.Queued {
			empty = empty && n == 0
		}
		if empty || time.Since(start) > f.opts.Stall || ctx.Err() != nil {
			return h, time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DPSummary is summary.json of a differentially private scenario: the
// run's summary and its DP settings with the final ε.
type DPSummary struct {
	report.Summary
	DP *admin.DPDoc `json:"dp"`
}

// dpRequest puts the scenario's DP settings into the run request. The
// noise is keyed by the scenario seed so a simulation replays exactly (a
// production coordinator draws the key at random).
func dpRequest(sc *scenario.Scenario, req *admin.StartRequest) {
	if !(sc.Strategy.DPNoise > 0) {
		return
	}
	req.DPNoiseMultiplier, req.DPClip, req.DPDelta = sc.Strategy.DPNoise, sc.Strategy.DPClip, sc.Strategy.DPDelta
	h := sha256.Sum256(fmt.Appendf(nil, "fleetsim dp noise %d", sc.Seed))
	req.DPNoiseSeed = binary.LittleEndian.Uint64(h[:8]) | 1
}

// runBaseline runs bsc, a variant of the scenario in opts, into
// OUT/baseline-NAME, loading MNIST into opts first so that the run after
// it shares the data.
func runBaseline(ctx context.Context, bsc *scenario.Scenario, opts *Options, name string) (*report.Summary, error) {
	if opts.MNIST == nil && bsc.Dataset == "mnist" {
		sets, err := LoadMNIST(opts.MNISTDir)
		if err != nil {
			return nil, err
		}
		opts.MNIST = sets
	}
	if err := bsc.Validate(); err != nil {
		return nil, fmt.Errorf("fleet: baseline %s: %w", name, err)
	}
	bopts := *opts
	bopts.Baseline, bopts.Out = "", filepath.Join(opts.Out, "baseline-"+name)
	res, err := Run(ctx, bsc, bopts)
	if err != nil {
		return nil, fmt.Errorf("fleet: baseline %s: %w", name, err)
	}
	return &res.Summary, nil
}

func writeJSON(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}
