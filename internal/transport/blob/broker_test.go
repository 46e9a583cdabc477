package blob_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
)

// gate holds back publishes of chunks with index >= n until opened, so a
// test can restart the broker at a known point of a transfer.
type gate struct {
	transport.Transport
	topic string
	n     uint32
	open  chan struct{}
}

func (g *gate) Publish(ctx context.Context, topic string, payload []byte, opts transport.PublishOptions) error {
	if topic == g.topic {
		c, err := blob.DecodeChunk(payload, blob.Limits{})
		if err != nil {
			return err
		}
		if c.Index >= g.n {
			select {
			case <-g.open:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return g.Transport.Publish(ctx, topic, payload, opts)
}

// transferAcrossRestart moves a 10 MiB blob from the sender identity to the
// receiver identity through broker b, restarting the broker once the first
// 16 of 40 chunks have arrived. It checks the blob arrives intact and that
// no chunk the receiver held at the restart was sent again after it.
func transferAcrossRestart(t *testing.T, b transporttest.MQTTBroker, from, to topics.Identity) {
	log := zaptest.NewLogger(t)
	origin := blob.Coordinator(fleet)
	self := to.ID
	if from.Role == topics.RoleDevice {
		origin, self = blob.Device(fleet, from.ID), ""
	}
	model := payload(10<<20, 42)
	id := blob.Sum(model)

	senderTr := transporttest.Dial(t, b, from, clientIDOf(from, "sender"), nil)
	g := &gate{Transport: senderTr, topic: origin.ChunkTopic(id), n: 16, open: make(chan struct{})}
	sender := blob.NewSender(g, origin, blob.SenderConfig{}, log)
	serve(t, sender)
	if _, err := sender.Offer(context.Background(), model); err != nil {
		t.Fatal(err)
	}
	recvTr := transporttest.Dial(t, b, to, clientIDOf(to, "receiver"), nil)
	r := blob.NewReceiver(recvTr, blob.ReceiverConfig{Self: self, Window: 4, RetryInterval: 2 * time.Second}, log)

	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		data, err := r.Fetch(ctx, origin, id)
		done <- result{data, err}
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if held, _ := r.Progress(id); held >= 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first 16 chunks did not arrive within 30s: %+v; sender %+v %v; mqtt recv %+v, send %+v",
				r.Stats(), sender.Stats(), sender.ChunkSends(id), recvTr.Stats(), senderTr.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	heldAtRestart := map[uint32]bool{}
	for i := range uint32(40) {
		heldAtRestart[i] = true
	}
	for _, i := range r.Missing(id) {
		delete(heldAtRestart, i)
	}
	sendsAtRestart := sender.ChunkSends(id)
	b.Restart(t)
	close(g.open)

	res := <-done
	if res.err != nil {
		t.Fatalf("fetch: %v (receiver %+v, sender %+v)", res.err, r.Stats(), sender.Stats())
	}
	if !bytes.Equal(res.data, model) {
		t.Fatal("10 MiB blob arrived corrupted")
	}
	sends := sender.ChunkSends(id)
	total := 0
	for i, n := range sends {
		total += int(n)
		if heldAtRestart[uint32(i)] && n != sendsAtRestart[i] {
			t.Errorf("chunk %d was held by the receiver at the restart but sent again (%d times before, %d in all)", i, sendsAtRestart[i], n)
		}
		if !heldAtRestart[uint32(i)] && n == 0 {
			t.Errorf("chunk %d was never sent", i)
		}
	}
	t.Logf("held %d of 40 chunks at the restart; chunk publishes: %d before the restart, %d in all; receiver %+v; sender %+v",
		len(heldAtRestart), sum(sendsAtRestart), total, r.Stats(), sender.Stats())
}

func sum(xs []uint32) (n int) {
	for _, x := range xs {
		n += int(x)
	}
	return n
}

func clientIDOf(id topics.Identity, name string) string {
	if id.Role == topics.RoleDevice {
		return id.ID // the brokers insist
	}
	return "coordinator-" + name
}

func TestTenMiBEmbeddedBrokerRestart(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet})
	transferAcrossRestart(t, b, coordinator(), device(transporttest.Devices[0]))
}

func TestTenMiBEmbeddedBrokerRestartDeviceToCoordinator(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet, TLS: true})
	transferAcrossRestart(t, b, device(transporttest.Devices[1]), coordinator())
}

func TestTenMiBMosquittoRestart(t *testing.T) {
	b := transporttest.StartMosquitto(t, transporttest.BrokerOptions{Fleet: fleet, TLS: true})
	transferAcrossRestart(t, b, coordinator(), device(transporttest.Devices[0]))
}

func TestTenMiBMosquittoRestartDeviceToCoordinator(t *testing.T) {
	b := transporttest.StartMosquitto(t, transporttest.BrokerOptions{Fleet: fleet, TLS: true})
	transferAcrossRestart(t, b, device(transporttest.Devices[1]), coordinator())
}
