package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
)

const benchFleet = "bench"

// BenchmarkBlobTransfer moves a 4 MiB blob from the coordinator to a
// device through the embedded broker on loopback, as chunks with the
// windowed pull, and reports MB/s next to the baseline of the same bytes
// sent as one raw publish. The blob is offered (hashed) once, as a
// coordinator serving a model does; each iteration is one complete Fetch:
// requests, chunks, per-chunk and whole-blob hash checks.
func BenchmarkBlobTransfer(b *testing.B) {
	const size = 4 << 20
	payload := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	br := transporttest.StartEmbedded(b, transporttest.BrokerOptions{Fleet: benchFleet, MaxPayload: 2 * size})
	big := func(c *mqtt.Config) { c.MaxPayload = 2 * size }
	coord := transporttest.Dial(b, br, topics.Identity{Role: topics.RoleCoordinator, Fleet: benchFleet}, "coordinator-bench", big)
	dev := transporttest.Devices[0]
	device := transporttest.Dial(b, br, topics.Identity{Role: topics.RoleDevice, ID: dev, Fleet: benchFleet}, dev, big)

	b.Run("raw-single-publish", func(b *testing.B) {
		topic := topics.DeviceIn(benchFleet, dev, topics.KindTask)
		sub, err := device.Subscribe(context.Background(), topic)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe(context.Background()) }()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := coord.Publish(context.Background(), topic, payload, transport.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
			m := <-sub.C()
			if len(m.Payload) != size {
				b.Fatalf("got %d bytes", len(m.Payload))
			}
		}
		reportMBps(b, size, time.Since(start))
	})

	for _, tc := range []struct {
		chunk, window int
	}{
		{256 << 10, 8},
		{256 << 10, 16},
		{1 << 20, 4},
	} {
		b.Run(fmt.Sprintf("blob/chunk=%dKiB/window=%d", tc.chunk>>10, tc.window), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sender := blob.NewSender(coord, blob.Coordinator(benchFleet), blob.SenderConfig{ChunkSize: tc.chunk}, zap.NewNop())
			wait, err := sender.Start(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { cancel(); _ = wait() }()
			recv := blob.NewReceiver(device, blob.ReceiverConfig{Self: dev, Window: tc.window}, zap.NewNop())
			id := blob.Sum(payload)
			if _, err := sender.Offer(ctx, payload); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				got, err := recv.Fetch(ctx, blob.Coordinator(benchFleet), id)
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					b.Fatal("blob differs")
				}
			}
			reportMBps(b, size, time.Since(start))
			st := recv.Stats()
			b.ReportMetric(float64(st.Retries)/float64(b.N), "retries/op")
		})
	}
}

func reportMBps(b *testing.B, size int, d time.Duration) {
	b.ReportMetric(float64(size)*float64(b.N)/d.Seconds()/1e6, "MB/s")
}
