package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
	"time"
)

// Benchmarks of one full round, reporting per-client compute (client-ms,
// mean over clients of the time spent in all its stages), server compute
// for the round (server-ms) and bytes sent per client (bytes/client).
// recv-bytes/client is what the server sends to each client (neighbours'
// keys, forwarded shares, survivor set, unmask request).
// BenchmarkPlainAgg is the baseline: clients encode float32 updates as
// little-endian bytes, the server decodes and sums them; its /signed
// variant adds an Ed25519 signature over each update, as the transport
// envelope does in production (secure-aggregation messages get the same
// envelope on top of what is measured here).
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

func BenchmarkSecAgg(b *testing.B) {
	for _, sz := range benchSizes {
		for _, drop := range []int{0, 10} {
			name := fmt.Sprintf("clients=%d/dim=%d", sz.clients, sz.dim)
			if drop > 0 {
				name += fmt.Sprintf("/dropout=%d%%", drop)
			}
			b.Run(name, func(b *testing.B) {
				var client, server, masks time.Duration
				var sent, recv int64
				for b.Loop() {
					c, s, m, n, r := secAggRound(b, sz.clients, sz.dim, drop)
					client, server, masks, sent, recv = client+c, server+s, masks+m, sent+n, recv+r
				}
				rounds := float64(b.N)
				b.ReportMetric(float64(client.Microseconds())/1e3/rounds/float64(sz.clients), "client-ms")
				b.ReportMetric(float64(server.Microseconds())/1e3/rounds, "server-ms")
				b.ReportMetric(float64(masks.Microseconds())/1e3/rounds, "server-vector-ms")
				b.ReportMetric(float64(sent)/rounds/float64(sz.clients), "bytes/client")
				b.ReportMetric(float64(recv)/rounds/float64(sz.clients), "recv-bytes/client")
				b.ReportMetric(float64(4*sz.dim), "plain-bytes/client")
			})
		}
	}
}

// secAggRound runs one round; every drop-th client (0: none) drops after
// sharing keys, which makes the server undo its pairwise masks. It checks
// the result against the plain sum of the encoded inputs. vector is the
// part of the server time spent on vectors (summing masked inputs and
// removing masks); the rest is signatures, key checks and bookkeeping.
func secAggRound(b *testing.B, n, dim, drop int) (client, server, vector time.Duration, sent, recv int64) {
	deg := RecommendedDegree(n)
	cfg := testConfig(n, deg, (min(deg, n-1)+1)/2+1, dim)
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
	dropped := func(i uint32) bool { return drop > 0 && int(i)%drop == 0 }
	x := make([]float32, dim)
	want := make([]uint32, cfg.VectorLen())
	send := func(from uint32, msg []byte, err error) {
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(len(msg))
		t0 := time.Now()
		if err := srv.Receive(from, msg); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		server += d
		if srv.Stage() == StageMaskedInputCollection {
			vector += d
		}
	}
	advance := func() []Outbound {
		t0 := time.Now()
		out, err := srv.Advance()
		server += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	for i, c := range clients {
		t0 := time.Now()
		msg, err := c.AdvertiseKeys()
		client += time.Since(t0)
		send(uint32(i), msg, err)
	}
	for stage := StageShareKeys; stage <= StageUnmasking; stage++ {
		for _, o := range advance() {
			recv += int64(len(o.Payload))
			c := clients[o.To]
			var msg []byte
			var err error
			switch stage {
			case StageShareKeys:
				t0 := time.Now()
				msg, err = c.ShareKeys(o.Payload)
				client += time.Since(t0)
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
				b.StartTimer()
				t0 := time.Now()
				msg, err = c.MaskedInput(o.Payload, x, 0)
				client += time.Since(t0)
			case StageConsistencyCheck:
				t0 := time.Now()
				msg, err = c.ConsistencyCheck(o.Payload)
				client += time.Since(t0)
			case StageUnmasking:
				t0 := time.Now()
				msg, err = c.Unmask(o.Payload)
				client += time.Since(t0)
			}
			send(o.To, msg, err)
		}
	}
	vector -= server
	advance() // unmasking: reconstruct seeds and remove masks
	vector += server
	res, err := srv.Result()
	if err != nil {
		b.Fatal(err)
	}
	for j := range want {
		if res.Sum[j] != want[j] {
			b.Fatalf("sum[%d] differs from the plain sum of quantized inputs", j)
		}
	}
	return client, server, vector, sent, recv
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
	var client, server time.Duration
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
			t0 := time.Now()
			msg := make([]byte, 0, 4*len(x))
			for _, v := range x {
				msg = binary.LittleEndian.AppendUint32(msg, math.Float32bits(v))
			}
			var sig []byte
			if signed {
				sig = ed25519.Sign(keys[i], msg)
			}
			t1 := time.Now()
			client += t1.Sub(t0)
			sent += int64(len(msg) + len(sig))
			if signed && !ed25519.Verify(keys[i].Public().(ed25519.PublicKey), msg, sig) {
				b.Fatal("bad signature")
			}
			if len(msg) != 4*len(acc) {
				b.Fatal("update of the wrong length")
			}
			addFloat32LE(acc, msg)
			server += time.Since(t1)
		}
	}
	rounds := float64(b.N)
	b.ReportMetric(float64(client.Microseconds())/1e3/rounds/float64(clients), "client-ms")
	b.ReportMetric(float64(server.Microseconds())/1e3/rounds, "server-ms")
	b.ReportMetric(float64(sent)/rounds/float64(clients), "bytes/client")
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
