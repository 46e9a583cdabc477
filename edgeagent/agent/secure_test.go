package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/aggregation/secagg"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// secureBus is the test's view of what the devices send during a secure
// round: their secagg messages and updates, verified.
type secureBus struct {
	t    *testing.T
	c    *fakeCoordinator
	sub  transport.Subscription
	upd  transport.Subscription
	keys wire.KeyFunc
}

func newSecureBus(t *testing.T, bus *memory.Bus, c *fakeCoordinator) *secureBus {
	tr, err := bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}, ClientID: "secure-observer", QueueSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	sub, err := tr.Subscribe(context.Background(), topics.FleetRoot(fleet)+"/dev/+/out/"+topics.KindSecAgg)
	if err != nil {
		t.Fatal(err)
	}
	upd, err := tr.Subscribe(context.Background(), topics.FleetRoot(fleet)+"/dev/+/out/"+topics.KindUpdate)
	if err != nil {
		t.Fatal(err)
	}
	return &secureBus{t: t, c: c, sub: sub, upd: upd, keys: c.keys}
}

// next returns the next verified envelope on sub.
func (b *secureBus) next(sub transport.Subscription) *wire.Envelope {
	b.t.Helper()
	select {
	case m := <-sub.C():
		env, err := wire.Accept(m.Topic, m.Payload, wire.Limits{}, b.keys)
		if err != nil {
			b.t.Fatalf("device message rejected: %v", err)
		}
		return env
	case <-time.After(30 * time.Second):
		b.t.Fatal("no device message within 30s")
	}
	return nil
}

// TestSecureTask runs three real agents through a secure round driven by
// a secagg server in the test: each trains, runs the protocol signed with
// its own key, sends its masked input as a CODEC_SECAGG update, and the
// unmasked result is the sample-weighted mean of the deltas the same
// training produces without secure aggregation.
func TestSecureTask(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	sb := newSecureBus(t, bus, c)
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	c.announce(m1)
	ids := []string{"sec-a", "sec-b", "sec-c"}
	devs := make([]*device, len(ids))
	srcs := make([]int, len(ids))
	cfg := secagg.Config{Round: 9, N: len(ids), Degree: 2, Threshold: 2, Dim: len(weights) / 4, Clip: 1, MaxWeight: 100}
	cfg.RoundSeed[0] = 7
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		srcs[i] = 32 * (i + 1)
		devs[i] = newDevice(t, c, host, id, synthetic(t, srcs[i], uint64(i+1)), nil)
		keys[i] = devs[i].key.Public().(ed25519.PublicKey)
		cfg.DeviceKeys = append(cfg.DeviceKeys, devs[i].key.Public().(ed25519.PublicKey))
		devs[i].start(t, bus)
	}
	for _, d := range devs {
		eventually(t, "model installed", func() bool { return d.activeVersion() == 1 })
	}
	srv, err := secagg.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	task := trainTask(9, m1, 5)
	task.Secagg = &fedgepb.SecAggParams{Threshold: 2, Degree: 2, RoundSeed: cfg.RoundSeed[:], ClipRange: 1, QuantBits: 32, Participants: ids}
	setup := server.EncodeSetupBody(cfg.MaxWeight, cfg.Dim, keys)
	for _, id := range ids {
		c.sendTask(id, task)
		c.publish(topics.DeviceIn(fleet, id, topics.KindSecAgg), fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG,
			&fedgepb.SecAggMessage{RoundId: 9, Stage: 1, Body: setup}, false)
	}
	index := func(env *wire.Envelope) uint32 { return uint32(slices.Index(ids, env.Sender)) }
	var samples [3]uint64
	updates := map[string][]byte{} // message id of each device's update
	for srv.Stage() < secagg.StageDone {
		stage := srv.Stage()
		for i := 0; i < len(ids); i++ {
			if stage == secagg.StageMaskedInputCollection {
				env := sb.next(sb.upd)
				if id, ok := updates[env.Sender]; ok {
					// An update is resent until acknowledged (every 200 ms
					// here): the coordinator acknowledges a copy again and
					// never feeds it to the protocol twice.
					if !bytes.Equal(id, env.MessageID) {
						t.Fatalf("%s sent a second, different update", env.Sender)
					}
					if err := c.ack(c.ctx, env, 9, env.Sender); err != nil {
						t.Fatal(err)
					}
					i--
					continue
				}
				updates[env.Sender] = env.MessageID
				u := env.Msg.(*fedgepb.Update)
				if u.Codec != fedgepb.Codec_CODEC_SECAGG || u.RoundId != 9 || len(u.EncodedDelta) == 0 {
					t.Fatalf("masked input update %+v", u)
				}
				samples[index(env)] = u.SampleCount
				if err := srv.Receive(index(env), u.EncodedDelta); err != nil {
					t.Fatal(err)
				}
				if err := c.ack(c.ctx, env, 9, env.Sender); err != nil {
					t.Fatal(err)
				}
				continue
			}
			env := sb.next(sb.sub)
			m := env.Msg.(*fedgepb.SecAggMessage)
			if m.RoundId != 9 || m.Stage != uint32(stage)+1 {
				t.Fatalf("%s sent stage %d of round %d during %v", env.Sender, m.Stage, m.RoundId, stage)
			}
			if err := srv.Receive(index(env), m.Body); err != nil {
				t.Fatalf("%s: %v", env.Sender, err)
			}
		}
		out, err := srv.Advance()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out {
			c.publish(topics.DeviceIn(fleet, ids[o.To], topics.KindSecAgg), fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG,
				&fedgepb.SecAggMessage{RoundId: 9, Stage: uint32(srv.Stage()) + 1, Body: o.Payload}, false)
		}
	}
	res, err := srv.Result()
	if err != nil {
		t.Fatal(err)
	}
	mean := res.Mean()
	want := make([]float64, cfg.Dim)
	var total float64
	for i, d := range devs {
		if samples[i] != uint64(srcs[i]) {
			t.Fatalf("%s reported %d samples, has %d", d.id, samples[i], srcs[i])
		}
		delta := referenceDelta(t, host, wasm, weights, task, synthetic(t, srcs[i], uint64(i+1)))
		for j, x := range delta {
			want[j] += float64(samples[i]) * float64(x)
		}
		total += float64(samples[i])
	}
	for j := range want {
		if d := mean[j] - want[j]/total; math.Abs(d) > 1e-5 {
			t.Fatalf("coordinate %d: unmasked mean %v, plain weighted mean %v", j, mean[j], want[j]/total)
		}
	}
	for _, d := range devs {
		eventually(t, "unmasking answered", func() bool { return d.agent.Stats().SecureRounds == 1 })
		if st := d.agent.Stats(); st.Acked != 1 || st.TasksDropped != 0 {
			t.Fatalf("%s stats %+v", d.id, st)
		}
	}
}

// TestSecureTaskBadSetup: a setup for another model dimension makes the
// device refuse the task (a Status naming the round) without sending
// anything secret.
func TestSecureTaskBadSetup(t *testing.T) {
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinator(t, bus)
	host := newHost(t)
	sb := newSecureBus(t, bus, c)
	wasm, weights := logregModel(t, host)
	m1 := c.model(1, wasm, weights)
	c.announce(m1)
	ids := []string{"sec-a", "sec-b"}
	d := newDevice(t, c, host, ids[0], synthetic(t, 32, 1), nil)
	d.start(t, bus)
	eventually(t, "model installed", func() bool { return d.activeVersion() == 1 })
	task := trainTask(3, m1, 5)
	task.Secagg = &fedgepb.SecAggParams{Threshold: 2, Degree: 1, RoundSeed: make([]byte, 32), ClipRange: 1, QuantBits: 32, Participants: ids}
	pub := d.key.Public().(ed25519.PublicKey)
	c.sendTask(d.id, task)
	c.publish(topics.DeviceIn(fleet, d.id, topics.KindSecAgg), fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG,
		&fedgepb.SecAggMessage{RoundId: 3, Stage: 1, Body: server.EncodeSetupBody(10, len(weights)/4+1, [][]byte{pub, pub})}, false)
	eventually(t, "task refused", func() bool { return d.agent.Stats().TasksDropped == 1 })
	select {
	case m := <-sb.sub.C():
		t.Fatalf("device sent %s after a bad setup", m.Topic)
	default:
	}
}

func TestSecureConfig(t *testing.T) {
	pub := make([]byte, 32)
	setup := &SecureSetup{MaxWeight: 10, Dim: 4, Keys: []ed25519.PublicKey{pub, pub, pub}}
	task := &fedgepb.RoundTask{RoundId: 2, Secagg: &fedgepb.SecAggParams{Threshold: 2, Degree: 2, RoundSeed: make([]byte, 32),
		ClipRange: 1, QuantBits: 32, Participants: []string{"a", "b", "c"}}}
	cfg, id, err := SecureConfig(task, "b", setup)
	if err != nil || id != 1 || cfg.N != 3 || cfg.Round != 2 || cfg.MaxWeight != 10 {
		t.Fatalf("config %+v, id %d, %v", cfg, id, err)
	}
	for name, mod := range map[string]func(*fedgepb.RoundTask){
		"unsorted":   func(t *fedgepb.RoundTask) { t.Secagg.Participants = []string{"b", "a", "c"} },
		"not listed": func(t *fedgepb.RoundTask) { t.Secagg.Participants = []string{"a", "c", "d"} },
		"quant bits": func(t *fedgepb.RoundTask) { t.Secagg.QuantBits = 16 },
		"threshold":  func(t *fedgepb.RoundTask) { t.Secagg.Threshold = 1 },
		"keys":       func(t *fedgepb.RoundTask) { t.Secagg.Participants = []string{"a", "b"} },
		"no params":  func(t *fedgepb.RoundTask) { t.Secagg = nil },
		"short seed": func(t *fedgepb.RoundTask) { t.Secagg.RoundSeed = t.Secagg.RoundSeed[:8] },
		"odd degree": func(t *fedgepb.RoundTask) {
			t.Secagg.Participants = []string{"a", "b", "c", "d", "e"}
			t.Secagg.Degree = 3
		},
		"zero clip": func(t *fedgepb.RoundTask) { t.Secagg.ClipRange = 0 },
	} {
		bad := &fedgepb.RoundTask{RoundId: 2, Secagg: &fedgepb.SecAggParams{Threshold: 2, Degree: 2, RoundSeed: make([]byte, 32),
			ClipRange: 1, QuantBits: 32, Participants: []string{"a", "b", "c"}}}
		mod(bad)
		s := setup
		if name == "odd degree" {
			s = &SecureSetup{MaxWeight: 10, Dim: 4, Keys: []ed25519.PublicKey{pub, pub, pub, pub, pub}}
		}
		if _, _, err := SecureConfig(bad, "b", s); !errors.Is(err, ErrSecureSetup) {
			t.Errorf("%s: %v, want ErrSecureSetup", name, err)
		}
	}
}

func TestDecodeSecureSetup(t *testing.T) {
	keys := [][]byte{make([]byte, 32), make([]byte, 32)}
	keys[1][0] = 9
	s, err := DecodeSecureSetup(server.EncodeSetupBody(12.5, 7850, keys), 2)
	if err != nil || s.MaxWeight != 12.5 || s.Dim != 7850 || s.Keys[1][0] != 9 {
		t.Fatalf("%+v, %v", s, err)
	}
	for name, b := range map[string][]byte{
		"short":      server.EncodeSetupBody(1, 1, keys)[:40],
		"nan weight": server.EncodeSetupBody(math.NaN(), 1, keys),
		"zero dim":   server.EncodeSetupBody(1, 0, keys),
		"neg weight": server.EncodeSetupBody(-1, 1, keys),
	} {
		if _, err := DecodeSecureSetup(b, 2); !errors.Is(err, ErrSecureSetup) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecodeSecureSetup(f *testing.F) {
	f.Add(server.EncodeSetupBody(10, 4, [][]byte{make([]byte, 32), make([]byte, 32)}), 2)
	f.Add([]byte{}, 3)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		s, err := DecodeSecureSetup(b, n)
		if err != nil {
			return
		}
		if len(s.Keys) != n || !(s.MaxWeight > 0) || math.IsInf(s.MaxWeight, 0) || s.Dim < 1 {
			t.Fatalf("accepted %+v", s)
		}
		for i, k := range s.Keys {
			if string(k) != string(b[12+32*i:12+32*(i+1)]) {
				t.Fatalf("key %d differs", i)
			}
		}
	})
}
