package server

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

const (
	testFleet = "testfleet"
	testModel = "logreg"
	wait      = 10 * time.Second
)

var testStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	hostOnce sync.Once
	testHost *runtime.Host
	hostErr  error
)

// sharedHost compiles each test module once per test binary.
func sharedHost(t testing.TB) *runtime.Host {
	hostOnce.Do(func() { testHost, hostErr = runtime.NewHost(context.Background(), runtime.Config{}) })
	if hostErr != nil {
		t.Fatal(hostErr)
	}
	return testHost
}

type harness struct {
	t       testing.TB
	bus     *memory.Bus
	clk     *clock.Virtual
	st      store.Store
	models  *registry.Models
	creds   *registry.CredentialFile
	key     ed25519.PrivateKey
	srv     *Server
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	cfgHook func(*Config)
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	models, err := registry.NewModels(t.TempDir(), sharedHost(t), "logreg", "mlp")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := registry.OpenCredentialFile(t.TempDir() + "/credentials.json")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, bus: memory.NewBus(memory.Config{}, nil), clk: clock.NewVirtual(testStart),
		st: store.NewMemory(), models: models, creds: creds, key: wiretest.Key(wire.CoordinatorID),
	}
	t.Cleanup(h.stop)
	return h
}

// start runs a server on the harness's store (a restart if one ran before).
func (h *harness) start() {
	h.t.Helper()
	h.stop()
	tr, err := h.bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: testFleet}, QueueSize: 1024})
	if err != nil {
		h.t.Fatal(err)
	}
	h.reg = prometheus.NewRegistry()
	met, err := NewMetrics(h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := Config{
		Fleet: testFleet, Transport: tr, Store: h.st, Clock: h.clk, Key: h.key, Models: h.models,
		Log: zaptest.NewLogger(h.t), Credentials: h.creds, NonceKey: []byte("test nonce key"), Metrics: met,
		Limits: wire.Limits{MaxMessageBytes: 256 << 10}, FetchTimeout: 20 * time.Second, BlobChunkSize: 4 << 10,
	}
	if h.cfgHook != nil {
		h.cfgHook(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	h.srv, h.cancel, h.done = srv, cancel, make(chan error, 1)
	go func() {
		h.done <- srv.Run(ctx)
		_ = tr.Close()
	}()
	rctx, rcancel := context.WithTimeout(ctx, wait)
	defer rcancel()
	if err := srv.Ready(rctx); err != nil {
		h.t.Fatalf("server not ready: %v", err)
	}
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("server run: %v", err)
	}
	h.cancel = nil
}

// approve registers devices as enrolled with their wiretest keys.
func (h *harness) approve(ids ...string) {
	h.t.Helper()
	b := &store.Batch{}
	for _, id := range ids {
		b.Devices = append(b.Devices, &store.Device{DeviceId: id, PublicKey: wiretest.Public(id), EnrollState: fedgepb.EnrollState_ENROLL_STATE_APPROVED})
	}
	if err := h.st.Apply(context.Background(), b); err != nil {
		h.t.Fatal(err)
	}
	if h.srv != nil {
		h.srv.devices.Committed(b)
	}
}

// online approves devices, starts the server, says hello from each and
// waits until all are online.
func (h *harness) online(ids ...string) []*agent {
	h.t.Helper()
	h.approve(ids...)
	h.start()
	out := make([]*agent, len(ids))
	for i, id := range ids {
		out[i] = h.agent(id)
		out[i].hello(nil)
	}
	h.waitFor("online", func() bool { return h.status().DevicesOnline == len(ids) })
	return out
}

// advance moves the virtual clock by d in one-second ticks, giving the
// loop time to take each tick.
func (h *harness) advance(d time.Duration) {
	for step := time.Duration(0); step < d; step += time.Second {
		h.clk.Advance(time.Second)
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) startRun(req admin.StartRequest) *admin.RunDoc {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	doc, err := h.srv.StartRun(ctx, "test", req)
	if err != nil {
		h.t.Fatalf("start run: %v", err)
	}
	return doc
}

func (h *harness) status() *admin.StatusDoc {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	doc, err := h.srv.Status(ctx)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return doc
}

// waitFor polls cond until it holds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) weights(version uint64) []float32 {
	h.t.Helper()
	mv, err := h.st.ModelVersion(context.Background(), version)
	if err != nil {
		h.t.Fatalf("model version %d: %v", version, err)
	}
	w, err := round.DecodeWeights(mv.Weights, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return w
}

// agent is a fake edge agent speaking the protocol with a wiretest key.
type agent struct {
	h     *harness
	id    string
	key   ed25519.PrivateKey
	c     *memory.Client
	sub   transport.Subscription
	stash []*wire.Envelope
}

func (h *harness) agent(id string) *agent {
	h.t.Helper()
	c, err := h.bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: testFleet}, QueueSize: 256})
	if err != nil {
		h.t.Fatal(err)
	}
	sub, err := c.Subscribe(context.Background(), topics.DeviceInAll(testFleet, id))
	if err != nil {
		h.t.Fatal(err)
	}
	a := &agent{h: h, id: id, key: wiretest.Key(id), c: c, sub: sub}
	h.t.Cleanup(func() { _ = c.Close() })
	return a
}

func (a *agent) send(kind string, typ fedgepb.PayloadType, msg proto.Message) []byte {
	a.h.t.Helper()
	raw, id := a.seal(typ, msg)
	a.raw(kind, raw)
	return id
}

// seal signs msg as the agent: the raw envelope and its message id.
func (a *agent) seal(typ fedgepb.PayloadType, msg proto.Message) ([]byte, []byte) {
	a.h.t.Helper()
	env, err := wire.SealEnvelope(a.key, a.id, typ, msg, a.h.clk.Now())
	if err != nil {
		a.h.t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		a.h.t.Fatal(err)
	}
	return raw, env.MessageID
}

// raw publishes bytes on one of the agent's out topics.
func (a *agent) raw(kind string, b []byte) {
	a.h.t.Helper()
	if err := a.c.Publish(context.Background(), topics.DeviceOut(testFleet, a.id, kind), b, transport.PublishOptions{}); err != nil {
		a.h.t.Fatal(err)
	}
}

func (a *agent) hello(tags map[string]string) {
	a.send(topics.KindStatus, fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, &fedgepb.Hello{
		DeviceId: a.id, Capabilities: &fedgepb.Capabilities{Arch: "amd64", SampleCount: 100, Tags: tags, AbiVersions: []uint32{1}, Features: []string{fedgepb.FeatureSecAgg}},
	})
}

// next returns the next inbound message of type typ, keeping others.
func (a *agent) next(typ fedgepb.PayloadType) *wire.Envelope {
	a.h.t.Helper()
	for i, e := range a.stash {
		if e.Type == typ {
			a.stash = append(a.stash[:i], a.stash[i+1:]...)
			return e
		}
	}
	timeout := time.After(wait)
	for {
		select {
		case m := <-a.sub.C():
			if p, _ := topics.Parse(m.Topic); p.Kind == topics.KindBlob {
				continue // blob requests are not envelopes
			}
			env, err := wire.Accept(m.Topic, m.Payload, wire.Limits{}, wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: a.h.key.Public().(ed25519.PublicKey)}))
			if err != nil {
				a.h.t.Fatalf("%s: coordinator message rejected: %v", a.id, err)
			}
			if env.Type == typ {
				return env
			}
			a.stash = append(a.stash, env)
		case <-timeout:
			a.h.t.Fatalf("%s: no %v within %v", a.id, typ, wait)
		}
	}
}

func (a *agent) task() *fedgepb.RoundTask {
	return a.next(fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK).Msg.(*fedgepb.RoundTask)
}

// ack waits for the ack of message id.
func (a *agent) ack(msgID []byte) *fedgepb.Ack {
	a.h.t.Helper()
	for {
		ack := a.next(fedgepb.PayloadType_PAYLOAD_TYPE_ACK).Msg.(*fedgepb.Ack)
		if string(ack.MessageId) == string(msgID) {
			return ack
		}
	}
}

// constDelta is a delta of dim copies of v.
func constDelta(dim int, v float32) []float32 {
	d := make([]float32, dim)
	for i := range d {
		d[i] = v
	}
	return d
}

func encodeF32(t testing.TB, delta []float32) []byte {
	b, err := codec.Float32Codec{}.Encode(nil, delta)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawF32 encodes without the encoder's checks (NaN allowed), declaring dim.
func rawF32(dim int, delta []float32) []byte {
	b := []byte{byte(codec.Float32), codec.Version, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[2:], uint32(dim))
	for _, x := range delta {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// update builds the update answering task.
func (a *agent) update(task *fedgepb.RoundTask, samples uint64, delta []float32) *fedgepb.Update {
	return &fedgepb.Update{
		RoundId: task.RoundId, DeviceId: a.id, BaseModelHash: task.BaseModelHash, SampleCount: samples,
		Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: encodeF32(a.h.t, delta), Nonce: task.Nonce,
		Metrics: &fedgepb.TrainMetrics{Loss: 0.5, Accuracy: 0.8},
	}
}

func (a *agent) sendUpdate(u *fedgepb.Update) []byte {
	fixLen(u)
	return a.send(topics.KindUpdate, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u)
}

// dimOf is the parameter count of the test model.
func (h *harness) dimOf() int {
	mod, err := h.models.Get(context.Background(), testModel)
	if err != nil {
		h.t.Fatal(err)
	}
	return mod.Meta.Params
}

func startReq(rounds uint32, minClients uint32) admin.StartRequest {
	return admin.StartRequest{Model: testModel, Rounds: rounds, MinClients: minClients, DeadlineMs: 60_000, Seed: 7}
}

// fixLen sets delta_length of an inline update to its length.
func fixLen(u *fedgepb.Update) *fedgepb.Update {
	if len(u.DeltaBlobId) == 0 {
		u.DeltaLength = uint64(len(u.EncodedDelta))
	}
	return u
}

// deviceBlobSender serves a fake device's update blobs to the coordinator's
// signed requests.
func (h *harness) deviceBlobSender(tr transport.Transport, id string) *blob.Sender {
	keys := wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: h.key.Public().(ed25519.PublicKey)})
	return blob.NewSender(tr, blob.Device(testFleet, id), blob.SenderConfig{ChunkSize: 4 << 10,
		Open: wire.BlobRequestOpener(wire.Limits{}, keys, nil)}, nil)
}

// blobUpdate offers delta as the agent's update blob (served until the
// test ends) and returns the update naming it, the sender and the blob id.
func (a *agent) blobUpdate(task *fedgepb.RoundTask, samples uint64, delta []float32) (*fedgepb.Update, *blob.Sender, blob.ID) {
	a.h.t.Helper()
	enc := encodeF32(a.h.t, delta)
	snd := a.h.deviceBlobSender(a.c, a.id)
	ctx, cancel := context.WithCancel(context.Background())
	a.h.t.Cleanup(cancel)
	if _, err := snd.Start(ctx); err != nil {
		a.h.t.Fatal(err)
	}
	desc, err := snd.Offer(ctx, enc)
	if err != nil {
		a.h.t.Fatal(err)
	}
	u := a.update(task, samples, make([]float32, len(delta)))
	u.EncodedDelta, u.DeltaBlobId, u.DeltaLength = nil, desc.BlobId, uint64(len(enc))
	return u, snd, blob.Sum(enc)
}
