package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Environment of the re-executed crash child (see TestMain).
const (
	envChild    = "FEDGE_CRASH_CHILD"
	envData     = "FEDGE_CRASH_DATA"
	envBroker   = "FEDGE_CRASH_BROKER"
	envPassword = "FEDGE_CRASH_PASSWORD"
	envFault    = "FEDGE_CRASH_FAULT"
	envFaultAt  = "FEDGE_CRASH_FAULT_AT"
)

const crashFleet = "crashfleet"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		if err := crashChild(); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild is a coordinator on a Badger store in a real directory,
// connected to the parent's broker. It starts a 2-round run if the store
// has none, serves until the run is done, and SIGKILLs itself at the
// FaultAt-th passage through the fault point named in the environment.
func crashChild() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := os.Getenv(envData)
	st, err := store.Open(store.BadgerOptions(filepath.Join(dir, StoreDir)), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	key, _, err := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return err
	}
	host, err := runtime.NewHost(ctx, runtime.Config{})
	if err != nil {
		return err
	}
	models, err := registry.NewModels(filepath.Join(dir, ModelsDir), host, "logreg")
	if err != nil {
		return err
	}
	tr, err := mqtt.Dial(ctx, mqtt.Config{BrokerURL: os.Getenv(envBroker), ClientID: "coordinator-" + crashFleet,
		Username: "coordinator", Password: os.Getenv(envPassword)}, nil)
	if err != nil {
		return err
	}
	defer tr.Close()
	fault, at := os.Getenv(envFault), 0
	if fault != "" {
		if at, err = strconv.Atoi(os.Getenv(envFaultAt)); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	seen := 0
	log := zap.NewNop()
	if os.Getenv("FEDGE_CRASH_LOG") != "" {
		log, _ = zap.NewDevelopment()
	}
	srv, err := New(ctx, Config{
		Log: log, Fleet: crashFleet, Transport: tr, Store: st, Key: key, Models: models, NonceKey: []byte("crash"),
		TickInterval: 50 * time.Millisecond,
		FaultPoint: func(name string) {
			if name != fault {
				return
			}
			mu.Lock()
			seen++
			n := seen
			mu.Unlock()
			if n == at {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // never returns
			}
		},
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	if err := srv.Ready(ctx); err != nil {
		return err
	}
	runs, err := st.Runs(ctx)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		req := admin.StartRequest{Model: "logreg", Rounds: 2, MinClients: crashAgents, DeadlineMs: 600_000, Seed: 3}
		if _, err := srv.StartRun(ctx, "crash-test", req); err != nil {
			return err
		}
	}
	for {
		select {
		case err := <-done:
			return fmt.Errorf("server stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		stat, err := srv.Status(ctx)
		if err != nil {
			return err
		}
		if stat.Run != nil && stat.Run.State != "running" {
			if stat.Run.State != "done" {
				return fmt.Errorf("run ended %s: %s", stat.Run.State, stat.Run.Reason)
			}
			cancel()
			return <-done
		}
	}
}

const crashAgents = 3

// crashAgent is a fake agent over MQTT that keeps its update pending and
// resends it until acknowledged, as the protocol requires.
type crashAgent struct {
	id      string
	key     ed25519.PrivateKey
	samples uint64
	coord   ed25519.PublicKey
	dim     int

	mu      sync.Mutex
	pending []byte             // sealed update awaiting its ack
	pendID  []byte             // its message id
	queued  *fedgepb.RoundTask // a task received while an update was pending
	done    map[uint64]bool    // rounds acknowledged
	acks    map[uint64]int     // accepted acks per round (redeliveries included)
	refused map[uint64]string
}

func (a *crashAgent) delta(roundID uint64) float32 {
	return float32(a.samples%7)*0.01 + float32(roundID)*0.001
}

func (a *crashAgent) run(ctx context.Context, t *testing.T, url, password string) {
	tr, err := mqtt.Dial(ctx, mqtt.Config{BrokerURL: url, ClientID: a.id, Username: a.id, Password: password}, nil)
	if err != nil {
		t.Errorf("%s: dial: %v", a.id, err)
		return
	}
	defer tr.Close()
	sub, err := tr.Subscribe(ctx, topics.DeviceInAll(crashFleet, a.id))
	if err != nil {
		t.Errorf("%s: subscribe: %v", a.id, err)
		return
	}
	hello, _ := wire.Seal(a.key, a.id, fedgepb.PayloadType_PAYLOAD_TYPE_HELLO, &fedgepb.Hello{DeviceId: a.id, Capabilities: &fedgepb.Capabilities{SampleCount: a.samples}}, time.Now())
	_ = tr.Publish(ctx, topics.DeviceOut(crashFleet, a.id, topics.KindStatus), hello, transport.PublishOptions{})
	keys := wire.StaticKeys(map[string]ed25519.PublicKey{wire.CoordinatorID: a.coord})
	resend := time.NewTicker(300 * time.Millisecond)
	defer resend.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resend.C:
			a.mu.Lock()
			p := a.pending
			a.mu.Unlock()
			if p != nil {
				_ = tr.Publish(ctx, topics.DeviceOut(crashFleet, a.id, topics.KindUpdate), p, transport.PublishOptions{})
			}
		case m := <-sub.C():
			env, err := wire.Accept(m.Topic, m.Payload, wire.Limits{}, keys)
			if err != nil {
				continue // blob requests and the like
			}
			switch msg := env.Msg.(type) {
			case *fedgepb.RoundTask:
				a.onTask(ctx, t, tr, msg)
			case *fedgepb.Ack:
				a.mu.Lock()
				if msg.Accepted {
					a.acks[msg.RoundId]++
				} else {
					a.refused[msg.RoundId] = msg.Reason
				}
				next := (*fedgepb.RoundTask)(nil)
				if a.pendID != nil && string(msg.MessageId) == string(a.pendID) {
					a.done[msg.RoundId] = true
					a.pending, a.pendID = nil, nil
					next, a.queued = a.queued, nil
				}
				a.mu.Unlock()
				if next != nil {
					a.onTask(ctx, t, tr, next)
				}
			}
		}
	}
}

func (a *crashAgent) onTask(ctx context.Context, t *testing.T, tr transport.Transport, task *fedgepb.RoundTask) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done[task.RoundId] {
		return // never retrain a finished round
	}
	if a.pending != nil {
		a.queued = task // trained once the pending update is acknowledged
		return
	}
	enc := encodeF32(t, constDelta(a.dim, a.delta(task.RoundId)))
	u := &fedgepb.Update{RoundId: task.RoundId, DeviceId: a.id, BaseModelHash: task.BaseModelHash, SampleCount: a.samples,
		Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: enc, DeltaLength: uint64(len(enc)), Nonce: task.Nonce,
		Metrics: &fedgepb.TrainMetrics{Loss: 1, Accuracy: 0.5}}
	env, err := wire.SealEnvelope(a.key, a.id, fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, u, time.Now())
	if err != nil {
		t.Errorf("%s: seal: %v", a.id, err)
		return
	}
	raw, _ := env.Marshal()
	a.pending, a.pendID = raw, env.MessageID
	_ = tr.Publish(ctx, topics.DeviceOut(crashFleet, a.id, topics.KindUpdate), raw, transport.PublishOptions{})
}

// TestCrashAtFaultPoints kills a coordinator child process with SIGKILL at
// each fault point of the Ready loop and restarts it: the run completes,
// and the final model is exactly the FedAvg of every device's update of
// each round, once (an update lost or counted twice would change it).
func TestCrashAtFaultPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	points := []struct {
		fault string
		at    int
	}{
		{FaultAggregate, 1},     // round 1's aggregation
		{FaultAggregate, 2},     // round 2's aggregation
		{FaultBeforePersist, 6}, // a batch in hand, mid-round
		{FaultAfterPersist, 4},  // an accepted update on disk, its ack unsent
		{FaultAfterPersist, 7},
		{FaultMidPublish, 2},   // half of a batch's messages out
		{FaultAfterPublish, 5}, // published, Advance not called
	}
	for _, p := range points {
		t.Run(fmt.Sprintf("%s#%d", p.fault, p.at), func(t *testing.T) { crashScenario(t, p.fault, p.at) })
	}
}

func crashScenario(t *testing.T, fault string, at int) {
	dir := t.TempDir()
	creds := broker.NewCredentials()
	coordSecret, coordPW, err := broker.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Add("coordinator", coordSecret, topics.Identity{Role: topics.RoleCoordinator, Fleet: crashFleet}); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{Fleet: crashFleet, TCPAddr: "127.0.0.1:0", Credentials: creds}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := "tcp://" + b.TCPAddr()

	// Enroll the agents in the child's store, and pin its key.
	key, _, err := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	agents := make([]*crashAgent, crashAgents)
	batch := &store.Batch{}
	passwords := map[string]string{}
	for i := range agents {
		id := fmt.Sprintf("dev-%d", i)
		secret, pw, _ := broker.GenerateSecret()
		if err := creds.Add(id, secret, topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: crashFleet}); err != nil {
			t.Fatal(err)
		}
		passwords[id] = pw
		agents[i] = &crashAgent{id: id, key: wiretestKey(id), samples: uint64(10 * (i + 1)), coord: key.Public().(ed25519.PublicKey),
			dim: 7850, done: map[uint64]bool{}, acks: map[uint64]int{}, refused: map[uint64]string{}}
		batch.Devices = append(batch.Devices, &store.Device{DeviceId: id, PublicKey: wiretestKey(id).Public().(ed25519.PublicKey), EnrollState: fedgepb.EnrollState_ENROLL_STATE_APPROVED, Online: true})
	}
	st, err := store.Open(store.BadgerOptions(filepath.Join(dir, StoreDir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	st.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.run(ctx, t, url, passwords[a.id])
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	child := func(fault string, at int) error {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"=1", envData+"="+dir, envBroker+"="+url, envPassword+"="+coordPW,
			envFault+"="+fault, envFaultAt+"="+strconv.Itoa(at))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(90*time.Second, func() { _ = cmd.Process.Kill() })
		defer timer.Stop()
		return cmd.Wait()
	}
	err = child(fault, at)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child with fault %s#%d: %v, want killed by SIGKILL", fault, at, err)
	}
	if err := child("", 0); err != nil {
		t.Fatalf("restarted child: %v", err)
	}

	st, err = store.Open(store.BadgerOptions(filepath.Join(dir, StoreDir)), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bg := context.Background()
	runs, err := st.Runs(bg)
	if err != nil || len(runs) != 1 || runs[0].State != fedgepb.RunState_RUN_STATE_DONE || runs[0].RoundsCommitted != 2 {
		t.Fatalf("runs %v %v", runs, err)
	}
	w := func(v uint64) []float32 {
		mv, err := st.ModelVersion(bg, v)
		if err != nil {
			t.Fatal(err)
		}
		x, err := round.DecodeWeights(mv.Weights, 0)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	rounds, err := st.Rounds(bg, runs[0].RunId)
	if err != nil {
		t.Fatal(err)
	}
	version := uint64(1)
	for _, r := range rounds {
		if r.Phase != fedgepb.RoundPhase_ROUND_PHASE_DONE {
			continue
		}
		samples, vals := []uint64{}, []float32{}
		for _, a := range agents {
			samples, vals = append(samples, a.samples), append(vals, a.delta(r.RoundId))
		}
		if len(r.Participants) != crashAgents {
			t.Fatalf("round %d participants %v", r.RoundId, r.Participants)
		}
		assertClose(t, w(r.NewVersion), expectFedAvg(w(version), samples, vals))
		version = r.NewVersion
	}
	if version != 3 {
		t.Fatalf("final version %d, want 3", version)
	}
	for _, a := range agents {
		a.mu.Lock()
		if len(a.refused) > 0 {
			t.Errorf("%s refused: %v", a.id, a.refused)
		}
		a.mu.Unlock()
	}
}
