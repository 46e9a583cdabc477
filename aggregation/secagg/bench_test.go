package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"
)

// Benchmarks of one full round, reporting per-client compute (client-ms,
// mean over clients of the time spent in all its stages), server compute
// for the round (server-ms) and bytes sent per client in all stages
// (bytes/client). recv-bytes/client is what the server sends to each client
// (neighbours' keys, forwarded shares, survivor set, unmask request).
// server-vector-ms is the part of server-ms spent on vectors (folding in
// masked inputs, removing masks); the rest is key checks, Shamir and
// bookkeeping.
//
// BenchmarkPlainAgg is the baseline: clients encode float32 updates as
// little-endian bytes, the server decodes and sums them; its /signed
// variant adds an Ed25519 signature over each update, as the transport
// envelope does in production (secure-aggregation messages get the same
// envelope on top of what is measured here, so compare BenchmarkSecAgg with
// the unsigned variant).
//
// BenchmarkSecAgg also runs that plain server (decode and sum the float32
// updates of the same clients) inside each round, so plain-server-ms and the
// ratios server-x-plain (server-ms / plain-server-ms) and bytes-x-plain
// (bytes/client / plain-bytes/client) come from one run under the same load.
// Timings are wall clock and noisy on a shared machine; on Linux the *-cpu-ms
// metrics and server-cpu-x-plain are the same spans in thread CPU time
// (the benchmark goroutine is locked to its thread), which excludes waiting
// for a core. BenchmarkSecAggServer measures the server alone by replaying a
// recorded round.
//
// The plain baseline is deliberately tight (an unrolled decode-and-add, as
// fast as the secure path's own sum); the coordinator's real plain path
// (codec.DecodeFloat32 with its finiteness check, then WeightedSum.Add into
// float64) costs about three times as much per update.
//
//	go test -run '^$' -bench 'SecAgg|PlainAgg' -benchtime 1x ./aggregation/secagg/

var benchSizes = []struct{ clients, dim int }{{100, 100000}, {1000, 100000}}

// fillInput writes a deterministic pseudo-random update for client i.
func fillInput(x []float32, i int) {
	s := uint64(i)*0x9E3779B97F4A7C15 + 1
	for j := range x {
		s = s*6364136223846793005 + 1442695040888963407
		x[j] = float32(int32(s>>32)) / (1 << 31) * 1.5
	}
}

// span accumulates wall-clock and thread CPU time.
type span struct{ wall, cpu time.Duration }

type mark struct {
	wall time.Time
	cpu  time.Duration
}

func now() mark { return mark{time.Now(), threadCPU()} }

// since adds the time from t to now to every span in to.
func since(t mark, to ...*span) {
	wall, cpu := time.Since(t.wall), threadCPU()-t.cpu
	for _, s := range to {
		s.wall += wall
		s.cpu += cpu
	}
}

func (s *span) add(o span) { s.wall += o.wall; s.cpu += o.cpu }

// reportSpan reports s per round (and per client if per > 1) as name-ms and,
// when thread CPU time is available, name-cpu-ms.
func reportSpan(b *testing.B, s span, per int, name string) {
	div := float64(b.N) * float64(per) * 1e6
	b.ReportMetric(float64(s.wall)/div, name+"-ms")
	if s.cpu > 0 {
		b.ReportMetric(float64(s.cpu)/div, name+"-cpu-ms")
	}
}

func BenchmarkSecAgg(b *testing.B) {
	for _, sz := range benchSizes {
		for _, drop := range []int{0, 10} {
			name := fmt.Sprintf("clients=%d/dim=%d", sz.clients, sz.dim)
			if drop > 0 {
				name += fmt.Sprintf("/dropout=%d%%", drop)
			}
			b.Run(name, func(b *testing.B) {
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				var tot roundStats
				for b.Loop() {
					tot.add(secAggRound(b, sz.clients, sz.dim, drop))
				}
				rounds, plainBytes := float64(b.N), float64(4*sz.dim)
				reportSpan(b, tot.client, sz.clients, "client")
				reportSpan(b, tot.server, 1, "server")
				reportSpan(b, tot.vector, 1, "server-vector")
				reportSpan(b, tot.plain, 1, "plain-server")
				b.ReportMetric(float64(tot.server.wall)/float64(tot.plain.wall), "server-x-plain")
				if tot.plain.cpu > 0 {
					b.ReportMetric(float64(tot.server.cpu)/float64(tot.plain.cpu), "server-cpu-x-plain")
				}
				perClient := float64(tot.sent) / rounds / float64(sz.clients)
				b.ReportMetric(perClient, "bytes/client")
				b.ReportMetric(float64(tot.recv)/rounds/float64(sz.clients), "recv-bytes/client")
				b.ReportMetric(plainBytes, "plain-bytes/client")
				b.ReportMetric(perClient/plainBytes, "bytes-x-plain")
			})
		}
	}
}

// plainSink keeps the in-round plain sum observable.
var plainSink float32

// roundStats are the measurements of secAggRound.
type roundStats struct {
	client, server, vector span // all clients' compute; the server's; its vector part
	// plain is the plain server's time to decode and sum the float32
	// updates of the same clients, measured in the same round.
	plain      span
	sent, recv int64 // bytes sent by all clients in all stages; received by them
}

func (t *roundStats) add(o roundStats) {
	t.client.add(o.client)
	t.server.add(o.server)
	t.vector.add(o.vector)
	t.plain.add(o.plain)
	t.sent += o.sent
	t.recv += o.recv
}

// secAggRound runs one round; every drop-th client (0: none) drops after
// sharing keys, which makes the server undo its pairwise masks. It checks
// the result against the plain sum of the encoded inputs, and times the
// plain server on the float32 updates of the clients that sent input.
func secAggRound(b *testing.B, n, dim, drop int) roundStats {
	var st roundStats
	deg := RecommendedDegree(n)
	cfg := testConfig(n, deg, (min(deg, n-1)+1)/2+1, dim)
	t0 := now()
	srv, err := NewServer(cfg) // the graph is server work too
	since(t0, &st.server)
	if err != nil {
		b.Fatal(err)
	}
	clients := make([]*Client, n)
	for i := range clients {
		if clients[i], err = NewClient(cfg, uint32(i), deviceKey(i), nil); err != nil {
			b.Fatal(err)
		}
	}
	dropped := func(i uint32) bool { return drop > 0 && int(i)%drop == 0 }
	x := make([]float32, dim)
	want := make([]uint32, cfg.VectorLen())
	plainAcc := make([]float32, dim)
	plainMsg := make([]byte, 4*dim)
	send := func(from uint32, msg []byte, err error) {
		if err != nil {
			b.Fatal(err)
		}
		st.sent += int64(len(msg))
		vector := srv.Stage() == StageMaskedInputCollection
		t0 := now()
		err = srv.Receive(from, msg)
		if vector {
			since(t0, &st.server, &st.vector)
		} else {
			since(t0, &st.server)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	advance := func() []Outbound {
		unmask := srv.Stage() == StageUnmasking // reconstruct seeds, remove masks
		t0 := now()
		out, err := srv.Advance()
		if unmask {
			since(t0, &st.server, &st.vector)
		} else {
			since(t0, &st.server)
		}
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	for i, c := range clients {
		t0 := now()
		msg, err := c.AdvertiseKeys()
		since(t0, &st.client)
		send(uint32(i), msg, err)
	}
	for stage := StageShareKeys; stage <= StageUnmasking; stage++ {
		for _, o := range advance() {
			st.recv += int64(len(o.Payload))
			c := clients[o.To]
			var msg []byte
			var err error
			switch stage {
			case StageShareKeys:
				t0 := now()
				msg, err = c.ShareKeys(o.Payload)
				since(t0, &st.client)
			case StageMaskedInputCollection:
				if dropped(o.To) {
					continue
				}
				b.StopTimer()
				fillInput(x, int(o.To))
				enc, _ := cfg.Encode(x, 0)
				for j, v := range enc {
					want[j] += v
				}
				for j, v := range x { // the plain client's update
					binary.LittleEndian.PutUint32(plainMsg[4*j:], math.Float32bits(v))
				}
				tp := now() // the plain server's work for this update
				if len(plainMsg) != 4*len(plainAcc) {
					b.Fatal("update of the wrong length")
				}
				addFloat32LE(plainAcc, plainMsg)
				since(tp, &st.plain)
				b.StartTimer()
				t0 := now()
				msg, err = c.MaskedInput(o.Payload, x, 0)
				since(t0, &st.client)
			case StageConsistencyCheck:
				t0 := now()
				msg, err = c.ConsistencyCheck(o.Payload)
				since(t0, &st.client)
			case StageUnmasking:
				t0 := now()
				msg, err = c.Unmask(o.Payload)
				since(t0, &st.client)
			}
			send(o.To, msg, err)
		}
	}
	advance()
	plainSink = plainAcc[0]
	res, err := srv.Result()
	if err != nil {
		b.Fatal(err)
	}
	for j := range want {
		if res.Sum[j] != want[j] {
			b.Fatalf("sum[%d] differs from the plain sum of quantized inputs", j)
		}
	}
	return st
}

func BenchmarkPlainAgg(b *testing.B) {
	for _, sz := range benchSizes {
		for _, signed := range []bool{false, true} {
			name := fmt.Sprintf("clients=%d/dim=%d", sz.clients, sz.dim)
			if signed {
				name += "/signed" // each update Ed25519-signed by its device, as on the wire
			}
			b.Run(name, func(b *testing.B) { plainAgg(b, sz.clients, sz.dim, signed) })
		}
	}
}

func plainAgg(b *testing.B, clients, dim int, signed bool) {
	runtime.LockOSThread() // for threadCPU
	defer runtime.UnlockOSThread()
	var client, server span
	var sent int64
	x := make([]float32, dim)
	keys := make([]ed25519.PrivateKey, clients)
	for i := range keys {
		keys[i] = deviceKey(i)
	}
	for b.Loop() {
		acc := make([]float32, dim)
		for i := range clients {
			b.StopTimer()
			fillInput(x, i)
			b.StartTimer()
			t0 := now()
			msg := make([]byte, 0, 4*len(x))
			for _, v := range x {
				msg = binary.LittleEndian.AppendUint32(msg, math.Float32bits(v))
			}
			var sig []byte
			if signed {
				sig = ed25519.Sign(keys[i], msg)
			}
			since(t0, &client)
			sent += int64(len(msg) + len(sig))
			t1 := now()
			if signed && !ed25519.Verify(keys[i].Public().(ed25519.PublicKey), msg, sig) {
				b.Fatal("bad signature")
			}
			if len(msg) != 4*len(acc) {
				b.Fatal("update of the wrong length")
			}
			addFloat32LE(acc, msg)
			since(t1, &server)
		}
		plainSink = acc[0]
	}
	reportSpan(b, client, clients, "client")
	reportSpan(b, server, 1, "server")
	b.ReportMetric(float64(sent)/float64(b.N)/float64(clients), "bytes/client")
}

// addFloat32LE is the plain server's decode-and-sum, unrolled like addLE so
// that the baseline is as tight as the secure path.
func addFloat32LE(acc []float32, b []byte) {
	b = b[:4*len(acc)]
	i := 0
	for ; i+8 <= len(acc); i += 8 {
		w := (*[32]byte)(b[4*i:])
		a := (*[8]float32)(acc[i:])
		a[0] += math.Float32frombits(binary.LittleEndian.Uint32(w[0:]))
		a[1] += math.Float32frombits(binary.LittleEndian.Uint32(w[4:]))
		a[2] += math.Float32frombits(binary.LittleEndian.Uint32(w[8:]))
		a[3] += math.Float32frombits(binary.LittleEndian.Uint32(w[12:]))
		a[4] += math.Float32frombits(binary.LittleEndian.Uint32(w[16:]))
		a[5] += math.Float32frombits(binary.LittleEndian.Uint32(w[20:]))
		a[6] += math.Float32frombits(binary.LittleEndian.Uint32(w[24:]))
		a[7] += math.Float32frombits(binary.LittleEndian.Uint32(w[28:]))
	}
	for ; i < len(acc); i++ {
		acc[i] += math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// BenchmarkSecAggServer replays the client messages of one recorded round
// (the round of BenchmarkSecAgg) to a fresh server on every iteration, so
// server-ms is the server's work alone (from NewServer to the result), with
// no client work in between to disturb the caches or the clock. In the same
// iteration the plain server decodes and sums the float32 updates of the
// same clients (plain-server-ms), giving server-x-plain from one run.
func BenchmarkSecAggServer(b *testing.B) {
	for _, sz := range benchSizes {
		for _, drop := range []int{0, 10} {
			name := fmt.Sprintf("clients=%d/dim=%d", sz.clients, sz.dim)
			if drop > 0 {
				name += fmt.Sprintf("/dropout=%d%%", drop)
			}
			b.Run(name, func(b *testing.B) {
				rec := recordRound(b, sz.clients, sz.dim, drop)
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				var server, plain span
				acc := make([]float32, sz.dim)
				for b.Loop() {
					t0 := now()
					rec.replay(b)
					since(t0, &server)
					clear(acc)
					t1 := now()
					for _, msg := range rec.plain {
						if len(msg) != 4*len(acc) {
							b.Fatal("update of the wrong length")
						}
						addFloat32LE(acc, msg)
					}
					since(t1, &plain)
				}
				plainSink = acc[0]
				reportSpan(b, server, 1, "server")
				reportSpan(b, plain, 1, "plain-server")
				b.ReportMetric(float64(server.wall)/float64(plain.wall), "server-x-plain")
				if plain.cpu > 0 {
					b.ReportMetric(float64(server.cpu)/float64(plain.cpu), "server-cpu-x-plain")
				}
			})
		}
	}
}

// recordedRound holds every client message of one round, per stage in
// delivery order, and the plain float32 updates of the clients that sent
// input.
type recordedRound struct {
	cfg   Config
	msgs  [StageUnmasking + 1][]recordedMsg
	plain [][]byte
	want  []uint32
}

type recordedMsg struct {
	from uint32
	msg  []byte
}

func recordRound(b *testing.B, n, dim, drop int) *recordedRound {
	deg := RecommendedDegree(n)
	rec := &recordedRound{cfg: testConfig(n, deg, (min(deg, n-1)+1)/2+1, dim)}
	cfg := rec.cfg
	srv, err := NewServer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	clients := make([]*Client, n)
	for i := range clients {
		if clients[i], err = NewClient(cfg, uint32(i), deviceKey(i), nil); err != nil {
			b.Fatal(err)
		}
	}
	x := make([]float32, dim)
	rec.want = make([]uint32, cfg.VectorLen())
	deliver := func(from uint32, msg []byte, err error) {
		if err == nil {
			err = srv.Receive(from, msg)
		}
		if err != nil {
			b.Fatal(err)
		}
		s := srv.Stage()
		rec.msgs[s] = append(rec.msgs[s], recordedMsg{from, msg})
	}
	for i, c := range clients {
		msg, err := c.AdvertiseKeys()
		deliver(uint32(i), msg, err)
	}
	for stage := StageShareKeys; stage <= StageUnmasking; stage++ {
		out, err := srv.Advance()
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range out {
			c := clients[o.To]
			var msg []byte
			switch stage {
			case StageShareKeys:
				msg, err = c.ShareKeys(o.Payload)
			case StageMaskedInputCollection:
				if drop > 0 && int(o.To)%drop == 0 {
					continue
				}
				fillInput(x, int(o.To))
				enc, _ := cfg.Encode(x, 0)
				for j, v := range enc {
					rec.want[j] += v
				}
				p := make([]byte, 4*dim)
				for j, v := range x {
					binary.LittleEndian.PutUint32(p[4*j:], math.Float32bits(v))
				}
				rec.plain = append(rec.plain, p)
				msg, err = c.MaskedInput(o.Payload, x, 0)
			case StageConsistencyCheck:
				msg, err = c.ConsistencyCheck(o.Payload)
			case StageUnmasking:
				msg, err = c.Unmask(o.Payload)
			}
			deliver(o.To, msg, err)
		}
	}
	rec.replay(b) // check that a replay gives the exact sum
	return rec
}

// replay runs a fresh server on the recorded messages and checks its result.
func (rec *recordedRound) replay(b *testing.B) {
	srv, err := NewServer(rec.cfg)
	if err != nil {
		b.Fatal(err)
	}
	for s := StageAdvertiseKeys; s <= StageUnmasking; s++ {
		for _, m := range rec.msgs[s] {
			if err := srv.Receive(m.from, m.msg); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := srv.Advance(); err != nil {
			b.Fatal(err)
		}
	}
	res, err := srv.Result()
	if err != nil {
		b.Fatal(err)
	}
	if !slices.Equal(res.Sum, rec.want) {
		b.Fatal("replayed sum differs from the plain sum of quantized inputs")
	}
}
