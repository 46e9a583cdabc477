package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

func inMessage(dev, kind string, payload string) transport.Message {
	return transport.Message{Topic: topics.DeviceOut(testFleet, dev, kind), Payload: []byte(payload)}
}

func drainInbox(in *inbox) []string {
	var out []string
	for {
		m, ok := in.pop()
		if !ok {
			return out
		}
		p, _ := topics.Parse(m.Topic)
		out = append(out, p.Device+":"+p.Kind+":"+string(m.Payload))
	}
}

// TestInbox: the policy of each kind of message, the per-device rate and
// the round-robin between devices.
func TestInbox(t *testing.T) {
	now := testStart
	clk := func() time.Time { return now }

	t.Run("status is coalesced to the device's latest", func(t *testing.T) {
		in := newInbox(InboxConfig{PerDevice: 2, Rate: -1}, clk)
		for i := range 5 {
			in.put(inMessage("a", topics.KindStatus, fmt.Sprint(i)))
		}
		got := strings.Join(drainInbox(in), " ")
		if got != "a:status:3 a:status:4" {
			t.Fatalf("got %s", got)
		}
		if st := in.stats(); st.Shed["status"][ShedCoalesced] != 3 || st.Accepted["status"] != 5 {
			t.Fatalf("stats %+v", st)
		}
		if len(in.takeRetry()) != 0 {
			t.Fatal("status shedding asked for a retry")
		}
	})

	t.Run("updates are kept; the device is told to retry the rest", func(t *testing.T) {
		in := newInbox(InboxConfig{PerDevice: 2, Rate: -1}, clk)
		for i := range 4 {
			in.put(inMessage("a", topics.KindUpdate, fmt.Sprint(i)))
		}
		in.put(inMessage("b", topics.KindUpdate, "x"))
		got := strings.Join(drainInbox(in), " ")
		if got != "a:update:0 b:update:x a:update:1" {
			t.Fatalf("got %s (want the devices in turn, a's first two)", got)
		}
		if r := in.takeRetry(); len(r) != 1 || r[0] != "a" {
			t.Fatalf("retry %v, want [a]", r)
		}
		if st := in.stats(); st.Shed["update"][ShedDeviceQueueFull] != 2 {
			t.Fatalf("stats %+v", st)
		}
	})

	t.Run("a flooding device gets its turn and no more", func(t *testing.T) {
		in := newInbox(InboxConfig{PerDevice: 8, Rate: -1}, clk)
		for i := range 100 {
			in.put(inMessage("flood", topics.KindStatus, fmt.Sprint(i)))
		}
		in.put(inMessage("quiet", topics.KindStatus, "hello"))
		got := drainInbox(in)
		if len(got) != 9 || got[1] != "quiet:status:hello" {
			t.Fatalf("got %v: want the quiet device second of 9", got)
		}
	})

	t.Run("rate limit per device and kind", func(t *testing.T) {
		in := newInbox(InboxConfig{PerDevice: 1000, Rate: 10, Burst: 20}, clk)
		for range 50 {
			in.put(inMessage("a", topics.KindEnroll, "e"))
			in.put(inMessage("b", topics.KindSecAgg, "s"))
		}
		st := in.stats()
		if st.Queued["enroll"] != 20 || st.Shed["enroll"][ShedRateLimited] != 30 || st.Queued["secagg"] != 20 {
			t.Fatalf("stats %+v", st)
		}
		now = now.Add(time.Second) // 10 more tokens
		for range 20 {
			in.put(inMessage("a", topics.KindEnroll, "e"))
		}
		if st := in.stats(); st.Queued["enroll"] != 30 {
			t.Fatalf("after a second: %+v", st)
		}
		if r := in.takeRetry(); len(r) != 1 || r[0] != "b" {
			t.Fatalf("retry %v, want [b] (secagg shed)", r)
		}
		// A's enroll flood spent its enroll bucket only: its update gets in.
		in.put(inMessage("a", topics.KindUpdate, "u"))
		if st := in.stats(); st.Queued["update"] != 1 {
			t.Fatalf("a's update after its enroll flood: %+v", st)
		}
	})

	t.Run("byte budget and bad topics", func(t *testing.T) {
		in := newInbox(InboxConfig{MaxBytes: 10, Rate: -1}, clk)
		in.put(inMessage("a", topics.KindUpdate, "12345678"))
		in.put(inMessage("b", topics.KindUpdate, "12345678"))
		in.put(transport.Message{Topic: "fedge/v1/" + testFleet + "/dev/a/out/blob/x/chunk"})
		in.put(transport.Message{Topic: "elsewhere"})
		st := in.stats()
		if st.Queued["update"] != 1 || st.Bytes != 8 || st.Shed["update"][ShedInboxFull] != 1 || st.Shed["status"][ShedBadTopic] != 2 {
			t.Fatalf("stats %+v", st)
		}
		now = now.Add(3 * time.Second)
		if st := in.stats(); st.OldestMs != 3000 {
			t.Fatalf("oldest %d ms, want 3000", st.OldestMs)
		}
		drainInbox(in)
		if st := in.stats(); st.Bytes != 0 || st.OldestMs != 0 {
			t.Fatalf("after draining: %+v", st)
		}
	})
}

// TestBurstKeepsHearing: one device replays its own validly signed status
// 10,000 times and its update 2,000 times while a round runs. The
// coordinator sheds and counts the flood, answers the shed updates with a
// retry-later ack, and still hears the other device, whose update commits
// the round.
func TestBurstKeepsHearing(t *testing.T) {
	h := newHarness(t)
	ags := h.online("dev-a", "dev-b")
	h.startRun(startReq(1, 2))
	tasks := []*fedgepb.RoundTask{ags[0].task(), ags[1].task()}
	dim := h.dimOf()

	// The flood: raw replays of genuine signed messages, as a device whose
	// credentials leaked (or whose firmware loops) would send them.
	st, _ := ags[0].seal(fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, &fedgepb.Status{DeviceId: "dev-a", State: fedgepb.DeviceState_DEVICE_STATE_ONLINE})
	up, _ := ags[0].seal(fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, fixLen(ags[0].update(tasks[0], 10, constDelta(dim, 0.5))))
	for i := range 10_000 {
		ags[0].raw(topics.KindStatus, st)
		if i%5 == 0 {
			ags[0].raw(topics.KindUpdate, up)
		}
	}
	msg := ags[1].sendUpdate(ags[1].update(tasks[1], 10, constDelta(dim, 1)))
	if a := ags[1].ack(msg); !a.Accepted {
		t.Fatalf("dev-b's update refused: %v", a)
	}
	// dev-a was told to retry later; it resends its update then, as agents
	// do, and the update counts once.
	for {
		a := ags[0].next(fedgepb.PayloadType_PAYLOAD_TYPE_ACK).Msg.(*fedgepb.Ack)
		if a.RetryAfterMs > 0 {
			h.clk.Advance(time.Duration(a.RetryAfterMs) * time.Millisecond)
			ags[0].raw(topics.KindUpdate, up)
			break
		}
	}
	deadline := time.Now().Add(wait)
	for h.status().ModelVersion != 2 {
		if time.Now().After(deadline) {
			d := h.status()
			t.Fatalf("round not committed: round %+v, inbound %+v, rejections %v", d.Round, d.Inbound, d.Rejections)
		}
		time.Sleep(5 * time.Millisecond)
	}
	doc := h.status()
	in := doc.Inbound
	if in == nil {
		t.Fatal("status has no inbound section")
	}
	shed := uint64(0)
	for _, reasons := range in.Shed {
		for _, n := range reasons {
			shed += n
		}
	}
	// The memory bus delivers a publish synchronously, so the test's tight
	// loop can outrun the inbox's reader: the transport then sheds too,
	// counted apart.
	queued := in.Accepted["status"] + in.Accepted["update"]
	if shed == 0 || queued+shed+in.TransportShed < 12_000 {
		t.Fatalf("inbound %+v: want the 12,000 flood messages queued or shed", in)
	}
	if doc.History[0].Accepted != 2 {
		t.Fatalf("round accepted %d updates, want 2 (the replays count once)", doc.History[0].Accepted)
	}
	t.Logf("flood: %d queued, shed %v, %d shed by the transport; rejections %v", queued, in.Shed, in.TransportShed, doc.Rejections)
	h.waitFor("inbox drained", func() bool { q := h.status().Inbound.Queued; return q["status"]+q["update"] == 0 })
	if !h.status().Inbound.Healthy {
		t.Fatalf("unhealthy after the flood: %v", h.status().Inbound.Problems)
	}
}

// deafConn stops handing the broker's bytes to the client while deaf is
// set: the broker still takes what the client sends.
type deafConn struct {
	net.Conn
	mu   sync.Mutex
	deaf bool
	cond *sync.Cond
}

func (d *deafConn) Read(b []byte) (int, error) {
	d.mu.Lock()
	for d.deaf {
		d.cond.Wait()
	}
	d.mu.Unlock()
	return d.Conn.Read(b)
}

func (d *deafConn) set(deaf bool) {
	d.mu.Lock()
	d.deaf = deaf
	d.mu.Unlock()
	d.cond.Broadcast()
}

// TestHealthReportsDeaf: over a real embedded broker, a coordinator whose
// connection stops delivering (forced here by a connection that no longer
// reads what the broker sends) is reported unhealthy by /healthz and
// /readyz within 10 s, with the reason, and healthy again once it hears.
func TestHealthReportsDeaf(t *testing.T) {
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: testFleet})
	cfg := b.ClientConfig(topics.Identity{Role: topics.RoleCoordinator, Fleet: testFleet})
	cfg.ClientID = "coordinator-" + testFleet
	var conn *deafConn
	var mu sync.Mutex
	addr := strings.TrimPrefix(cfg.BrokerURL, "tcp://")
	cfg.Dial = func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		d := &deafConn{Conn: c}
		d.cond = sync.NewCond(&d.mu)
		mu.Lock()
		conn = d
		mu.Unlock()
		return d, nil
	}
	tr, err := mqtt.Dial(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		conn.set(false)
		mu.Unlock()
		_ = tr.Close()
	})
	h := newHarness(t)
	srv, err := New(context.Background(), Config{Fleet: testFleet, Transport: tr, Store: store.NewMemory(), Key: h.key,
		Models: h.models, Log: zaptest.NewLogger(t), ProbeInterval: 300 * time.Millisecond, ProbeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	hd, err := admin.NewHandler(srv, admin.Options{Token: strings.Repeat("t", 16), Health: srv.AdminHealth})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(hd)
	t.Cleanup(web.Close)
	get := func(path string) (int, string) {
		resp, err := http.Get(web.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitHTTP := func(what, path string, code int, within time.Duration) string {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			c, body := get(path)
			if c == code {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s answered %d %q, want %d within %v", what, path, c, body, code, within)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitHTTP("hearing", "/readyz", http.StatusOK, 10*time.Second)
	if c, body := get("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz %d %q", c, body)
	}
	mu.Lock()
	conn.set(true)
	mu.Unlock()
	deafAt := time.Now()
	body := waitHTTP("deaf", "/healthz", http.StatusServiceUnavailable, 10*time.Second)
	t.Logf("deaf reported after %v: %q", time.Since(deafAt).Round(time.Millisecond), body)
	if !strings.Contains(body, "deaf") {
		t.Fatalf("/healthz body %q does not say deaf", body)
	}
	if c, _ := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while deaf", c)
	}
	mu.Lock()
	conn.set(false)
	mu.Unlock()
	waitHTTP("hearing again", "/healthz", http.StatusOK, 10*time.Second)
}

// FuzzInbox: any sequence of topics and payloads from the network leaves
// the inbox consistent: it never panics, everything it queued comes out
// once, its byte count returns to zero, and every message is either
// queued or counted as shed.
func FuzzInbox(f *testing.F) {
	f.Add("fedge/v1/f/dev/a/out/status", 10, uint8(3))
	f.Add("fedge/v1/f/dev/a/out/update", 1<<10, uint8(20))
	f.Add("fedge/v1/f/dev/+/out/secagg", 0, uint8(1))
	f.Add("fedge/v1/f/dev/a/out/blob/x/req", 5, uint8(2))
	f.Add("", 0, uint8(0))
	f.Fuzz(func(t *testing.T, topic string, size int, n uint8) {
		size = min(max(size, 0), 64<<10)
		in := newInbox(InboxConfig{PerDevice: 4, MaxMessages: 16, MaxBytes: 256 << 10, Rate: 5, Burst: 10}, func() time.Time { return testStart })
		for i := range int(n) {
			// A second device in turn, so round-robin and budgets mix.
			tp := topic
			if i%3 == 2 {
				tp = strings.Replace(topic, "/dev/a/", "/dev/b/", 1)
			}
			in.put(transport.Message{Topic: tp, Payload: make([]byte, size)})
		}
		st := in.stats()
		queued, shed := 0, uint64(0)
		for _, q := range st.Queued {
			queued += q
		}
		for _, reasons := range st.Shed {
			for r, k := range reasons {
				if r != ShedCoalesced {
					shed += k
				}
			}
		}
		var accepted uint64
		for _, a := range st.Accepted {
			accepted += a
		}
		if accepted+shed != uint64(n) {
			t.Fatalf("%d messages, %d queued and %d refused: %+v", n, accepted, shed, st)
		}
		popped := 0
		for {
			if _, ok := in.pop(); !ok {
				break
			}
			popped++
		}
		if popped != queued {
			t.Fatalf("popped %d of %d queued", popped, queued)
		}
		if st := in.stats(); st.Bytes != 0 || st.OldestMs != 0 {
			t.Fatalf("after draining: %+v", st)
		}
	})
}
