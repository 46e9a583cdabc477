package blob_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

const fleet = "fleet1"

func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func connect(t *testing.T, bus *memory.Bus, id topics.Identity) *memory.Client {
	t.Helper()
	c, err := bus.Connect(memory.ClientOptions{Identity: id, QueueSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func coordinator() topics.Identity {
	return topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}
}

func device(id string) topics.Identity {
	return topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet}
}

// serve runs s.Serve until the test ends.
func serve(t *testing.T, s *blob.Sender) {
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	})
}

func fetchCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A coordinator serves one model to several devices at once; every device
// gets it intact and chunks requested by several devices are coalesced.
func TestCoordinatorBlobToDevices(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	coord := connect(t, bus, coordinator())
	sender := blob.NewSender(coord, blob.Coordinator(fleet), blob.SenderConfig{ChunkSize: 64 << 10}, log)
	serve(t, sender)
	model := payload(1<<20+123, 1)
	desc, err := sender.Offer(context.Background(), model)
	if err != nil {
		t.Fatal(err)
	}
	id := blob.Sum(model)
	if !bytes.Equal(desc.BlobId, id[:]) || len(desc.ChunkHashes) != 17 {
		t.Fatalf("descriptor id %x with %d chunks, want %s with 17", desc.BlobId, len(desc.ChunkHashes), id)
	}

	devices := []string{"d1", "d2", "d3", "d4"}
	var wg sync.WaitGroup
	receivers := make([]*blob.Receiver, len(devices))
	for i, d := range devices {
		receivers[i] = blob.NewReceiver(connect(t, bus, device(d)), blob.ReceiverConfig{Self: d, Window: 4}, log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := receivers[i].Fetch(fetchCtx(t), blob.Coordinator(fleet), id)
			if err != nil {
				t.Errorf("%s: %v", d, err)
				return
			}
			if !bytes.Equal(got, model) {
				t.Errorf("%s: blob differs", d)
			}
		}()
	}
	wg.Wait()
	st := sender.Stats()
	t.Logf("sender %+v", st)
	for i, r := range receivers {
		if r.Stats().Completed != 1 || r.Stats().Rejected != 0 {
			t.Errorf("%s: %+v", devices[i], r.Stats())
		}
	}
	if st.BadRequests != 0 {
		t.Errorf("bad requests: %d", st.BadRequests)
	}
}

// A device sends an update blob to the coordinator.
func TestDeviceBlobToCoordinator(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	dev := connect(t, bus, device("d1"))
	sender := blob.NewSender(dev, blob.Device(fleet, "d1"), blob.SenderConfig{}, log)
	serve(t, sender)
	update := payload(600<<10, 2)
	if _, err := sender.Offer(context.Background(), update); err != nil {
		t.Fatal(err)
	}
	r := blob.NewReceiver(connect(t, bus, coordinator()), blob.ReceiverConfig{}, log)
	got, err := r.Fetch(fetchCtx(t), blob.Device(fleet, "d1"), blob.Sum(update))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, update) {
		t.Fatal("update differs")
	}
	if sends := sender.ChunkSends(blob.Sum(update)); len(sends) != 3 || sends[0] != 1 || sends[1] != 1 || sends[2] != 1 {
		t.Fatalf("chunk sends %v, want each of 3 chunks once", sends)
	}
	// An empty blob is a descriptor without chunks.
	if _, err := sender.Offer(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Fetch(fetchCtx(t), blob.Device(fleet, "d1"), blob.Sum(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty blob: %d bytes, %v", len(got), err)
	}
}

// A forged chunk (bad hash) is rejected, counted and asked for again; the
// transfer still completes.
func TestCorruptChunkRejected(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	coord := connect(t, bus, coordinator())
	model := payload(256<<10, 3)
	id := blob.Sum(model)
	origin := blob.Coordinator(fleet)
	desc, chunks, err := blob.Split(model, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	// The coordinator misbehaves by hand: descriptor, then a corrupted
	// chunk 0 in answer to the first request, then correct chunks.
	raw, _ := proto.Marshal(desc)
	if err := coord.Publish(context.Background(), origin.DescriptorTopic(id), raw, transport.PublishOptions{Retain: true}); err != nil {
		t.Fatal(err)
	}
	reqs, err := coord.Subscribe(context.Background(), origin.RequestFilter())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		corrupted := false
		for m := range reqs.C() {
			req, err := blob.DecodeRequest(m.Payload, blob.Limits{})
			if err != nil {
				t.Errorf("bad request: %v", err)
				return
			}
			for _, i := range req.Indices {
				data := chunks[i]
				if i == 0 && !corrupted {
					corrupted = true
					data = bytes.Clone(data)
					data[100] ^= 0xff
				}
				c, _ := proto.Marshal(&fedgepb.BlobChunk{BlobId: id[:], Index: i, ChunkHash: desc.ChunkHashes[i], Data: data})
				if err := coord.Publish(context.Background(), origin.ChunkTopic(id), c, transport.PublishOptions{}); err != nil {
					return
				}
			}
		}
	}()
	r := blob.NewReceiver(connect(t, bus, device("d1")), blob.ReceiverConfig{Self: "d1", Window: 2}, log)
	got, err := r.Fetch(fetchCtx(t), origin, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("blob differs")
	}
	if st := r.Stats(); st.Rejected != 1 || st.ChunksReceived != 4 || st.ChunksAsked != 5 {
		t.Fatalf("stats %+v, want 1 rejected, 4 received, 5 asked (chunk 0 twice)", st)
	}
}

// A Fetch that stops half way keeps its chunks; the next Fetch asks only
// for the missing ones.
func TestResumeAcrossFetches(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	model := payload(640<<10, 4)
	id := blob.Sum(model)
	g := &gate{Transport: connect(t, bus, coordinator()), topic: blob.Coordinator(fleet).ChunkTopic(id), n: 10, open: make(chan struct{})}
	sender := blob.NewSender(g, blob.Coordinator(fleet), blob.SenderConfig{ChunkSize: 16 << 10}, log)
	serve(t, sender)
	if _, err := sender.Offer(context.Background(), model); err != nil {
		t.Fatal(err)
	}
	r := blob.NewReceiver(connect(t, bus, device("d1")), blob.ReceiverConfig{Self: "d1", Window: 2}, log)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Chunks from 10 on are held back until the first fetch stops.
		for {
			if held, _ := r.Progress(id); held >= 10 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := r.Fetch(ctx, blob.Coordinator(fleet), id); !errors.Is(err, context.Canceled) {
		t.Fatalf("first fetch: %v, want canceled", err)
	}
	close(g.open)
	missing := r.Missing(id)
	held := 40 - len(missing)
	if held != 10 {
		t.Fatalf("held %d of 40 after the first fetch", held)
	}
	isMissing := map[uint32]bool{}
	for _, i := range missing {
		isMissing[i] = true
	}
	got, err := r.Fetch(fetchCtx(t), blob.Coordinator(fleet), id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("blob differs")
	}
	for i, n := range sender.ChunkSends(id) {
		if !isMissing[uint32(i)] && n != 1 {
			t.Errorf("chunk %d was held before the resume but sent %d times", i, n)
		}
	}
	t.Logf("held %d of 40 at the interruption; sender %+v; receiver %+v", held, sender.Stats(), r.Stats())
}

// Bad requests are rejected and counted; the sender keeps serving.
func TestSenderRejectsBadRequests(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	coord := connect(t, bus, coordinator())
	sender := blob.NewSender(coord, blob.Coordinator(fleet), blob.SenderConfig{ChunkSize: 4}, log)
	serve(t, sender)
	model := []byte("0123456789")
	id := blob.Sum(model)
	if _, err := sender.Offer(context.Background(), model); err != nil {
		t.Fatal(err)
	}
	dev := connect(t, bus, device("d1"))
	origin := blob.Coordinator(fleet)
	unknown := blob.Sum([]byte("other"))
	bad := []struct {
		topic string
		req   []byte
	}{
		{origin.RequestTopic(id, "d1"), []byte{0xff, 0x00}},                                                        // malformed
		{origin.RequestTopic(id, "d1"), mustMarshal(t, &fedgepb.BlobRequest{BlobId: id[:], Indices: []uint32{3}})}, // out of range
		{origin.RequestTopic(unknown, "d1"), mustMarshal(t, &fedgepb.BlobRequest{BlobId: unknown[:]})},             // unknown blob
		{origin.RequestTopic(id, "d1"), mustMarshal(t, &fedgepb.BlobRequest{BlobId: unknown[:]})},                  // id differs from topic
	}
	for _, b := range bad {
		if err := dev.Publish(context.Background(), b.topic, b.req, transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := blob.NewReceiver(dev, blob.ReceiverConfig{Self: "d1"}, log).Fetch(fetchCtx(t), origin, id)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("fetch after bad requests: %q, %v", got, err)
	}
	if st := sender.Stats(); st.BadRequests != uint64(len(bad)) {
		t.Fatalf("BadRequests = %d, want %d", st.BadRequests, len(bad))
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sender with Open serves only the requests it authenticates, and each
// requester only up to its rate: a flood of valid requests from one device
// costs the chunks its bucket allows, and another device still gets the
// blob. Every chunk published is reported to Sent.
func TestSenderAuthenticatesAndRateLimits(t *testing.T) {
	log := zaptest.NewLogger(t)
	bus := memory.NewBus(memory.Config{}, log)
	coord := connect(t, bus, coordinator())
	var sentMu sync.Mutex
	sent := 0
	open := func(topic string, payload []byte) (*fedgepb.BlobRequest, string, error) {
		p, _ := topics.Parse(topic)
		if p.Device == "intruder" {
			return nil, "", errors.New("unknown device")
		}
		req, err := blob.DecodeRequest(payload, blob.Limits{})
		return req, p.Device, err
	}
	sender := blob.NewSender(coord, blob.Coordinator(fleet), blob.SenderConfig{ChunkSize: 1 << 10, Open: open,
		RequesterRate: 1 << 10, RequesterBurst: 8 << 10,
		Sent: func(n int) { sentMu.Lock(); sent += n; sentMu.Unlock() }}, log)
	serve(t, sender)
	model := payload(4<<10, 3)
	id := blob.Sum(model)
	if _, err := sender.Offer(context.Background(), model); err != nil {
		t.Fatal(err)
	}
	origin := blob.Coordinator(fleet)
	for _, d := range []string{"intruder", "flooder"} {
		c := connect(t, bus, device(d))
		for range 100 {
			req := mustMarshal(t, &fedgepb.BlobRequest{BlobId: id[:], Indices: []uint32{0, 1, 2, 3}})
			if err := c.Publish(context.Background(), origin.RequestTopic(id, d), req, transport.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dev := connect(t, bus, device("d1"))
	got, err := blob.NewReceiver(dev, blob.ReceiverConfig{Self: "d1"}, log).Fetch(fetchCtx(t), origin, id)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("honest fetch: %v", err)
	}
	// The honest fetch can finish before the sender has worked through
	// the flood queued ahead of it: wait until all 200 are accounted for.
	st := sender.Stats()
	for deadline := time.Now().Add(10 * time.Second); st.BadRequests+st.RateLimited+st.Requests < 201 && time.Now().Before(deadline); st = sender.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
	// The flooder's bucket holds 8 chunks: two requests of four.
	if st.BadRequests != 100 || st.RateLimited < 97 || st.RateLimited > 98 {
		t.Fatalf("stats %+v: want 100 bad requests and 97-98 rate limited", st)
	}
	sentMu.Lock()
	defer sentMu.Unlock()
	if sent == 0 || uint64(sent) < st.BytesSent {
		t.Fatalf("Sent saw %d bytes, stats say %d chunk data bytes", sent, st.BytesSent)
	}
}
