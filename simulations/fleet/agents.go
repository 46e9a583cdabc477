package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	"github.com/fedge-dev/fedge/simulations/behavior"
)

// seededKey derives a reproducible Ed25519 key: the simulator's keys only
// need to differ, not to be secret.
func seededKey(seed uint64, role string, i uint64) ed25519.PrivateKey {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], i)
	s := sha256.Sum256(append([]byte("fleetsim "+role), b[:]...))
	return ed25519.NewKeyFromSeed(s[:])
}

// startAgents creates and runs one agent per device.
func (f *Fleet) startAgents(ctx context.Context, wg *sync.WaitGroup, net network, host *runtime.Host,
	train data.Source, parts [][]int, coordKey ed25519.PrivateKey) error {
	slots := make(chan struct{}, f.opts.Trainers)
	f.slots = slots
	blobs := f.blobs
	tick, resend := 10*time.Second, 30*time.Second
	if f.virtual != nil {
		// Under the virtual clock nothing is lost in transit, so resends
		// are rare; ticks are timers every agent registers, kept few.
		tick, resend = time.Hour, time.Hour
	}
	for i := range f.devices {
		d := &f.devices[i]
		var src data.Source
		src, err := data.Subset(train, parts[i])
		if err != nil {
			return fmt.Errorf("fleet: data of %s: %w", d.id, err)
		}
		if d.attack == behavior.LabelFlip {
			src = flipped{src}
		}
		a, err := agent.New(agent.Options{
			Fleet: FleetID, DeviceID: d.id, Key: d.key, CoordinatorKey: coordKey.Public().(ed25519.PublicKey),
			State: agent.NewMemoryStore(), Models: trackedModels{ModelStore: agent.NewMemoryModelStore(), f: f, dev: i},
			Host: host, Data: src, Clock: f.clk, Log: f.opts.Log.Named("agent"),
			Machine: agent.MachineConfig{ResendInterval: resend}, TickInterval: tick,
			TrainSlots: slots, Blobs: blobs,
		})
		if err != nil {
			return fmt.Errorf("fleet: agent %s: %w", d.id, err)
		}
		will, err := a.Will()
		if err != nil {
			return err
		}
		tr, err := net.device(ctx, d.id, will)
		if err != nil {
			return err
		}
		d.raw, d.agent = tr, a
		if c, ok := tr.(*mqtt.Client); ok {
			d.client = c
		}
		f.track.update(func() { d.connected = true })
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx, f.secureDevice(i, &deviceTransport{Transport: tr, f: f, dev: i})); err != nil && ctx.Err() == nil {
				f.log.Warn("agent stopped", zap.String("device", d.id), zap.Error(err))
			}
		}()
	}
	return nil
}

// waitOnline waits until the coordinator sees every device online, so
// that selection in the first round sees the whole fleet.
func (f *Fleet) waitOnline(ctx context.Context, srvErr <-chan error) error {
	deadline := time.Now().Add(max(f.opts.Stall, time.Minute))
	for {
		st, err := f.srv.Status(ctx)
		if err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		if st.DevicesOnline >= len(f.devices) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleet: only %d of %d devices came online in time", st.DevicesOnline, len(f.devices))
		}
		select {
		case err := <-srvErr:
			return fmt.Errorf("fleet: coordinator stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// expectedSelected is how many devices a round selects with the whole
// fleet online (the coordinator's rule: fraction rounded up, within min
// and max).
func (f *Fleet) expectedSelected() int {
	s := f.sc.Selection
	k := max(int(math.Ceil(s.Fraction*float64(f.sc.Clients))), s.MinClients, 1)
	if s.MaxClients > 0 {
		k = min(k, s.MaxClients)
	}
	return min(k, f.sc.Clients)
}

// warmCache puts the module and weights of a model version the
// coordinator has just persisted into the agents' shared cache, so that
// thousands of agents do not each download (and keep) their own copy. The
// agents still check every byte against the signed manifest.
func (f *Fleet) warmCache(m *fedgepb.ModelManifest) {
	ctx := context.Background()
	if mv, err := f.st.ModelVersion(ctx, m.Version); err == nil {
		f.blobs.Put(sha256.Sum256(mv.Weights), mv.Weights)
	}
	if mod, err := f.models.Get(ctx, m.ModelId); err == nil {
		f.blobs.Put(sha256.Sum256(mod.Wasm), mod.Wasm)
	}
}

// blobCache shares model bytes between the simulated agents.
type blobCache struct {
	mu sync.Mutex
	m  map[[32]byte][]byte
}

func (c *blobCache) Get(h [32]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[h]
	return b, ok
}

func (c *blobCache) Put(h [32]byte, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 16 { // models of old rounds are not fetched again
		clear(c.m)
	}
	c.m[h] = b
}

// countingClock is the coordinator's clock: it remembers when the
// coordinator's tick falls due and counts the ticks it re-armed, so the
// scheduler knows when a tick has been taken.
type countingClock struct {
	clock.Clock
	mu     sync.Mutex
	afters uint64
	due    time.Time
}

func (c *countingClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.afters++
	c.due = c.Clock.Now().Add(d)
	c.mu.Unlock()
	return c.Clock.After(d)
}

func (c *countingClock) state() (uint64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.afters, c.due
}

// evaluator is the coordinator's server-side evaluator; it keeps the
// first error, which ends the simulation (metrics need an accuracy).
type evaluator struct {
	inner server.Evaluator
	mu    sync.Mutex
	err   error
}

func (e *evaluator) Evaluate(ctx context.Context, model string, weights []float32) (float64, float64, error) {
	loss, acc, err := e.inner.Evaluate(ctx, model, weights)
	if err != nil && ctx.Err() == nil {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return loss, acc, err
}

func (e *evaluator) failure() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
