package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// seeded is a deterministic io.Reader for reproducible tests.
type seeded struct{ r *mrand.ChaCha8 }

func (s seeded) Read(p []byte) (int, error) { return s.r.Read(p) }

func seededRand(parts ...uint64) seeded {
	var seed [32]byte
	for i, p := range parts {
		binary.LittleEndian.PutUint64(seed[8*(i%4):], binary.LittleEndian.Uint64(seed[8*(i%4):])^p)
	}
	return seeded{mrand.NewChaCha8(seed)}
}

func deviceKey(i int) ed25519.PrivateKey {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i)+1)
	seed[31] = 0xD5
	return ed25519.NewKeyFromSeed(seed[:])
}

// testConfig builds a round config with device keys 0..n-1.
func testConfig(n, degree, threshold, dim int) Config {
	cfg := Config{Round: 7, N: n, Degree: degree, Threshold: threshold, Dim: dim, Clip: 1, DeviceKeys: make([]ed25519.PublicKey, n)}
	cfg.RoundSeed[0] = 0x42
	for i := range cfg.DeviceKeys {
		cfg.DeviceKeys[i] = deviceKey(i).Public().(ed25519.PublicKey)
	}
	return cfg
}

// round drives one server and its clients in memory, like the MQTT driver
// will: deliver, collect replies, Advance at the "deadline".
type round struct {
	t       testing.TB
	cfg     Config
	server  *Server
	clients []*Client
	inputs  [][]float32
	weights []float64
	// dropAt[u] = s: client u sends nothing from stage s on (-1: never drops).
	dropAt []Stage
	// seen records every message the server received, in order.
	seen []seenMsg
	// tamper, if set, may rewrite a server->client message before delivery.
	tamper func(stage Stage, to uint32, msg []byte) []byte
	// forge, if set, may rewrite a client->server message (a misbehaving device).
	forge func(stage Stage, from uint32, msg []byte) []byte
	// clientErrs counts client refusals per stage.
	clientErrs map[Stage][]error
}

type seenMsg struct {
	from uint32
	msg  []byte
}

const never = Stage(255)

func newRound(t testing.TB, cfg Config, seed uint64) *round {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &round{t: t, cfg: cfg, server: srv, clients: make([]*Client, cfg.N), inputs: make([][]float32, cfg.N),
		weights: make([]float64, cfg.N), dropAt: make([]Stage, cfg.N), clientErrs: map[Stage][]error{}}
	in := mrand.New(mrand.NewPCG(seed, 99))
	for i := range r.clients {
		c, err := NewClient(cfg, uint32(i), deviceKey(i), seededRand(seed, uint64(i)))
		if err != nil {
			t.Fatal(err)
		}
		r.clients[i] = c
		r.inputs[i] = make([]float32, cfg.Dim)
		for j := range r.inputs[i] {
			r.inputs[i][j] = float32(in.NormFloat64() * 0.6) // some values beyond the clip
		}
		r.weights[i] = 1 + 99*in.Float64()
		r.dropAt[i] = never
	}
	return r
}

func (r *round) deliver(from uint32, msg []byte) {
	if r.forge != nil {
		msg = r.forge(r.server.Stage(), from, msg)
	}
	r.seen = append(r.seen, seenMsg{from, msg})
	if err := r.server.Receive(from, msg); err != nil {
		r.t.Fatalf("server rejected an honest client's message: %v", err)
	}
}

// step runs the clients' part of the current server stage for the given
// server messages (nil in stage 0) and delivers their replies.
func (r *round) step(out []Outbound) {
	stage := r.server.Stage()
	if stage == StageAdvertiseKeys {
		for i, c := range r.clients {
			if r.dropAt[i] <= stage {
				continue
			}
			msg, err := c.AdvertiseKeys()
			if err != nil {
				r.t.Fatal(err)
			}
			r.deliver(uint32(i), msg)
		}
		return
	}
	for _, o := range out {
		if r.dropAt[o.To] <= stage {
			continue
		}
		payload := o.Payload
		if r.tamper != nil {
			payload = r.tamper(stage, o.To, payload)
		}
		c := r.clients[o.To]
		var reply []byte
		var err error
		switch stage {
		case StageShareKeys:
			reply, err = c.ShareKeys(payload)
		case StageMaskedInputCollection:
			w := 0.0
			if r.cfg.MaxWeight > 0 {
				w = r.weights[o.To]
			}
			reply, err = c.MaskedInput(payload, r.inputs[o.To], w)
		case StageConsistencyCheck:
			reply, err = c.ConsistencyCheck(payload)
		case StageUnmasking:
			reply, err = c.Unmask(payload)
		}
		if err != nil {
			r.clientErrs[stage] = append(r.clientErrs[stage], fmt.Errorf("client %d: %w", o.To, err))
			continue
		}
		r.deliver(o.To, reply)
	}
}

// run plays the whole round; it returns the result or the abort error and
// the stage at which the server stopped.
func (r *round) run() (*Result, error) {
	var out []Outbound
	for r.server.Stage() < StageDone {
		r.step(out)
		var err error
		if out, err = r.server.Advance(); err != nil {
			return nil, err
		}
	}
	return r.server.Result()
}

// plainSum is the reference: the sum mod 2^32 of the encoded inputs of the
// given clients, computed without any cryptography.
func (r *round) plainSum(clients []uint32) []uint32 {
	sum := make([]uint32, r.cfg.VectorLen())
	for _, u := range clients {
		w := 0.0
		if r.cfg.MaxWeight > 0 {
			w = r.weights[u]
		}
		enc, err := r.cfg.Encode(r.inputs[u], w)
		if err != nil {
			r.t.Fatal(err)
		}
		for i, v := range enc {
			sum[i] += v
		}
	}
	return sum
}

func (r *round) checkExact(res *Result, wantSurvivors []uint32) {
	r.t.Helper()
	if fmt.Sprint(res.Survivors) != fmt.Sprint(wantSurvivors) {
		r.t.Fatalf("survivors %v, want %v", res.Survivors, wantSurvivors)
	}
	want := r.plainSum(wantSurvivors)
	for i := range want {
		if res.Sum[i] != want[i] {
			r.t.Fatalf("sum[%d] = %d, plain sum of quantized inputs = %d", i, res.Sum[i], want[i])
		}
	}
}

// liveAfter lists the clients that did not drop before the given stage.
func (r *round) liveAfter(s Stage) []uint32 {
	var out []uint32
	for i, d := range r.dropAt {
		if d > s {
			out = append(out, uint32(i))
		}
	}
	return out
}
