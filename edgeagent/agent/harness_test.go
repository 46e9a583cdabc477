package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	wasmmodels "github.com/fedge-dev/fedge/wasm-models"
)

const fleet = "test"

// fakeCoordinator plays the coordinator on a memory bus: it signs and
// publishes manifests and model blobs, sends tasks, and verifies, records
// and (optionally) acknowledges what devices send.
type fakeCoordinator struct {
	t       testing.TB
	serving sync.WaitGroup // the serve goroutines, waited for at cleanup
	tr      transport.Transport
	pub     ed25519.PublicKey
	key     ed25519.PrivateKey
	sender  *blob.Sender
	recv    *blob.Receiver
	ctx     context.Context

	mu           sync.Mutex
	devKeys      map[string]ed25519.PublicKey
	autoAck      bool
	results      []*wire.Envelope // verified updates and evaluation results, in arrival order
	statuses     []*fedgepb.Status
	hellos       []*fedgepb.Hello
	enrolls      []*fedgepb.EnrollRequest
	deltas       map[string][]float32 // decoded delta per message id
	rejected     []error
	ackedOnce    map[string]int         // message id -> acks sent
	lastManifest *fedgepb.ModelManifest // of the latest model call
	// enrollReply, if set, answers every enrollment request.
	enrollReply *fedgepb.EnrollResponse
}

func newFakeCoordinator(t testing.TB, bus *memory.Bus) *fakeCoordinator {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	return newFakeCoordinatorKey(t, bus, key)
}

func newFakeCoordinatorKey(t testing.TB, bus *memory.Bus, key ed25519.PrivateKey) *fakeCoordinator {
	t.Helper()
	tr, err := bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}, QueueSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	return newFakeCoordinatorOn(t, tr, key)
}

// newFakeCoordinatorOn runs the fake coordinator over any transport.
func newFakeCoordinatorOn(t testing.TB, tr transport.Transport, key ed25519.PrivateKey) *fakeCoordinator {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pub := key.Public().(ed25519.PublicKey)
	c := &fakeCoordinator{t: t, tr: tr, pub: pub, key: key, ctx: ctx, autoAck: true,
		devKeys: map[string]ed25519.PublicKey{}, deltas: map[string][]float32{}, ackedOnce: map[string]int{}}
	// Handlers report to t, so they must be done before the test is.
	t.Cleanup(func() { cancel(); c.serving.Wait() })
	c.sender = blob.NewSender(tr, blob.Coordinator(fleet), blob.SenderConfig{ChunkSize: 16 << 10,
		Open: wire.BlobRequestOpener(wire.Limits{}, c.keys, nil)}, nil)
	if _, err := c.sender.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.recv = blob.NewReceiver(tr, blob.ReceiverConfig{RetryInterval: 200 * time.Millisecond,
		Seal: wire.BlobRequestSealer(key, wire.CoordinatorID, time.Now)}, nil)
	for _, kind := range []string{topics.KindUpdate, topics.KindStatus, topics.KindEnroll} {
		sub, err := tr.Subscribe(ctx, topics.FleetRoot(fleet)+"/dev/+/out/"+kind)
		if err != nil {
			t.Fatal(err)
		}
		c.serving.Add(1)
		go func() { defer c.serving.Done(); c.serve(sub) }()
	}
	return c
}

func (c *fakeCoordinator) keys(env *wire.Envelope) (ed25519.PublicKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.devKeys[env.Sender]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s", wire.ErrUnknownSender, env.Sender)
}

// serve verifies every delivery (no de-duplication, so tests see resends)
// and handles it.
func (c *fakeCoordinator) serve(sub transport.Subscription) {
	keys := wire.WithEnrollment(c.keys)
	for {
		select {
		case <-c.ctx.Done():
			return
		case msg, ok := <-sub.C():
			if !ok {
				return
			}
			env, err := wire.Accept(msg.Topic, msg.Payload, wire.Limits{}, keys)
			if err == nil {
				err = c.handle(c.ctx, env)
			}
			if err != nil {
				c.mu.Lock()
				c.rejected = append(c.rejected, err)
				c.mu.Unlock()
			}
		}
	}
}

func (c *fakeCoordinator) handle(ctx context.Context, env *wire.Envelope) error {
	switch m := env.Msg.(type) {
	case *fedgepb.Status:
		c.mu.Lock()
		c.statuses = append(c.statuses, m)
		c.mu.Unlock()
	case *fedgepb.Hello:
		c.mu.Lock()
		c.hellos = append(c.hellos, m)
		c.mu.Unlock()
	case *fedgepb.EnrollRequest:
		c.mu.Lock()
		c.enrolls = append(c.enrolls, m)
		resp := c.enrollReply
		c.mu.Unlock()
		if resp != nil {
			r := proto.Clone(resp).(*fedgepb.EnrollResponse)
			r.DeviceId = m.DeviceId
			c.publish(topics.DeviceIn(fleet, m.DeviceId, topics.KindEnroll), fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE, r, false)
		}
	case *fedgepb.Update:
		return c.onUpdate(ctx, env, m)
	case *fedgepb.EvaluateResult:
		c.record(env, nil)
		return c.maybeAck(ctx, env, m.RoundId, m.DeviceId)
	}
	return nil
}

func (c *fakeCoordinator) record(env *wire.Envelope, delta []float32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.results = append(c.results, env)
	if delta != nil {
		c.deltas[string(env.MessageID)] = delta
	}
}

func (c *fakeCoordinator) onUpdate(ctx context.Context, env *wire.Envelope, u *fedgepb.Update) error {
	enc := u.EncodedDelta
	if len(u.DeltaBlobId) > 0 {
		var id blob.ID
		copy(id[:], u.DeltaBlobId)
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		b, err := c.recv.Fetch(fctx, blob.Device(fleet, u.DeviceId), id)
		cancel()
		if err != nil {
			c.mu.Lock()
			c.rejected = append(c.rejected, err)
			c.mu.Unlock()
			return err
		}
		enc = b
	}
	if uint64(len(enc)) != u.DeltaLength {
		return fmt.Errorf("delta length %d, update says %d", len(enc), u.DeltaLength)
	}
	n, err := codecDim(enc)
	if err != nil {
		return err
	}
	delta := make([]float32, n)
	if _, err := codec.Decode(delta, enc); err != nil {
		return err
	}
	c.record(env, delta)
	return c.maybeAck(ctx, env, u.RoundId, u.DeviceId)
}

// codecDim reads the parameter count from a codec header (bytes 2..6).
func codecDim(enc []byte) (int, error) {
	if len(enc) < codec.HeaderSize {
		return 0, fmt.Errorf("encoded delta of %d bytes", len(enc))
	}
	return int(uint32(enc[2]) | uint32(enc[3])<<8 | uint32(enc[4])<<16 | uint32(enc[5])<<24), nil
}

func (c *fakeCoordinator) maybeAck(ctx context.Context, env *wire.Envelope, round uint64, dev string) error {
	c.mu.Lock()
	auto := c.autoAck
	c.mu.Unlock()
	if !auto {
		return nil
	}
	return c.ack(ctx, env, round, dev)
}

func (c *fakeCoordinator) ack(ctx context.Context, env *wire.Envelope, round uint64, dev string) error {
	c.mu.Lock()
	c.ackedOnce[string(env.MessageID)]++
	c.mu.Unlock()
	c.publish(topics.DeviceIn(fleet, dev, topics.KindAck), fedgepb.PayloadType_PAYLOAD_TYPE_ACK,
		&fedgepb.Ack{RoundId: round, MessageId: env.MessageID, Accepted: true}, false)
	return nil
}

func (c *fakeCoordinator) publish(topic string, typ fedgepb.PayloadType, msg wireMsg, retain bool) {
	c.t.Helper()
	raw, err := wire.Seal(c.key, wire.CoordinatorID, typ, msg, time.Now())
	if err != nil {
		c.t.Error(err)
		return
	}
	if err := c.tr.Publish(c.ctx, topic, raw, transport.PublishOptions{Retain: retain}); err != nil && c.ctx.Err() == nil {
		c.t.Error(err)
	}
}

// model builds a signed manifest for (wasm, weights) and offers both blobs.
func (c *fakeCoordinator) model(v uint64, wasm, weights []byte) *fedgepb.ModelManifest {
	c.t.Helper()
	m := signedModel(c.t, c.key, v, wasm, weights).Manifest
	c.lastManifest = m
	c.offer(wasm)
	c.offer(weights)
	return m
}

func (c *fakeCoordinator) offer(b []byte) {
	c.t.Helper()
	if _, err := c.sender.Offer(c.ctx, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *fakeCoordinator) announce(m *fedgepb.ModelManifest) {
	c.publish(topics.Manifest(fleet), fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, m, true)
}

func (c *fakeCoordinator) sendTask(dev string, t *fedgepb.RoundTask) {
	c.publish(topics.DeviceIn(fleet, dev, topics.KindTask), fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, t, false)
}

func (c *fakeCoordinator) resultsSnapshot() []*wire.Envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*wire.Envelope(nil), c.results...)
}

// eventually polls cond until it holds or 30s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// synthetic returns n MNIST-shaped samples whose label is a fixed function
// of the features, so a model can learn something.
func synthetic(t testing.TB, n int, seed uint64) *data.Dataset {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*784)
	y := make([]int, n)
	for i := range n {
		for j := range 784 {
			x[i*784+j] = r.Float32()
		}
		var s float32
		for j := range 10 {
			s += x[i*784+j]
		}
		y[i] = int(s) % 10
	}
	ds, err := data.NewDataset(x, y, 784, 10)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// logregModel returns the embedded logreg module and zero initial weights.
func logregModel(t testing.TB, host *runtime.Host) (wasm, weights []byte) {
	t.Helper()
	wasm = wasmmodels.MustGet("logreg").Wasm
	mod, err := host.Compile(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	in, err := mod.Instantiate(context.Background(), runtime.Options{MaxBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(context.Background())
	return wasm, make([]byte, 4*in.Metadata().Params)
}

func newHost(t testing.TB) *runtime.Host {
	t.Helper()
	h, err := runtime.NewHost(context.Background(), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// device is an agent under test with its stores, so it can be restarted.
type device struct {
	id     string
	key    ed25519.PrivateKey
	state  StateStore
	models ModelStore
	agent  *Agent
	tr     transport.Transport
	cancel context.CancelFunc
	done   chan error
}

func newDevice(t testing.TB, c *fakeCoordinator, host *runtime.Host, id string, src data.Source, mod func(*Options)) *device {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(nil)
	c.mu.Lock()
	c.devKeys[id] = pub
	c.mu.Unlock()
	d := &device{id: id, key: key, state: NewMemoryStore(), models: NewMemoryModelStore()}
	opts := Options{Fleet: fleet, DeviceID: id, Key: key, CoordinatorKey: c.pub, State: d.state, Models: d.models,
		Host: host, Data: src, TickInterval: 10 * time.Millisecond, Machine: MachineConfig{ResendInterval: 200 * time.Millisecond}}
	if mod != nil {
		mod(&opts)
	}
	d.state, d.models = opts.State, opts.Models
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	d.agent = a
	return d
}

// start connects the device to the bus (with its will) and runs it.
func (d *device) start(t testing.TB, bus *memory.Bus) {
	t.Helper()
	will, err := d.agent.Will()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleDevice, ID: d.id, Fleet: fleet}, Will: will})
	if err != nil {
		t.Fatal(err)
	}
	d.startOn(t, tr)
}

// startOn runs the device on a connected transport.
func (d *device) startOn(t testing.TB, tr transport.Transport) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.tr, d.cancel, d.done = tr, cancel, make(chan error, 1)
	go func() { d.done <- d.agent.Run(ctx, tr) }()
	t.Cleanup(func() { d.stop(t) })
}

// stop ends Run and disconnects cleanly.
func (d *device) stop(t testing.TB) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	if err := <-d.done; err != nil {
		t.Errorf("agent %s: Run: %v", d.id, err)
	}
	_ = d.tr.Close()
	d.cancel = nil
}

func (d *device) activeVersion() uint64 {
	vs, err := d.models.Versions()
	if err != nil || len(vs) == 0 {
		return 0
	}
	return vs[0].Version
}

func nonce(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

func trainTask(round uint64, m *fedgepb.ModelManifest, seed uint64) *fedgepb.RoundTask {
	return &fedgepb.RoundTask{RoundId: round, Kind: fedgepb.TaskKind_TASK_KIND_TRAIN, ModelId: m.ModelId,
		ModelVersion: m.Version, BaseModelHash: m.WeightsHash, Nonce: nonce(byte(round)),
		DeadlineUnixMs: time.Now().Add(time.Hour).UnixMilli(),
		Train:          &fedgepb.TrainConfig{Epochs: 1, BatchSize: 16, LearningRate: 0.1, Seed: seed, Codec: fedgepb.Codec_CODEC_FLOAT32}}
}

func sha(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
