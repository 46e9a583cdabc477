package wire_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/wire"
	"github.com/fedge-dev/fedge/internal/wire/wiretest"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// fakeSub is a transport.Subscription fed by the test.
type fakeSub struct {
	c    chan transport.Message
	once sync.Once
}

func newFakeSub(n int) *fakeSub { return &fakeSub{c: make(chan transport.Message, n)} }

func (s *fakeSub) C() <-chan transport.Message { return s.c }
func (s *fakeSub) Dropped() uint64             { return 0 }
func (s *fakeSub) Unsubscribe(context.Context) error {
	s.once.Do(func() { close(s.c) })
	return nil
}

func (s *fakeSub) send(topic string, raw []byte) {
	s.c <- transport.Message{Topic: topic, Payload: raw}
}

// goodStatus seals a fresh status (new message id) from Device, carrying
// seq as its round id so the handler can tell them apart.
func goodStatus(t testing.TB, seq uint64) (string, []byte) {
	t.Helper()
	raw, err := wire.Seal(wiretest.Key(wiretest.Device), wiretest.Device, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS,
		&fedgepb.Status{DeviceId: wiretest.Device, State: fedgepb.DeviceState_DEVICE_STATE_ONLINE, RoundId: seq}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return topics.DeviceOut(wiretest.Fleet, wiretest.Device, topics.KindStatus), raw
}

// serve runs Serve over everything already queued in sub (then closes it)
// and returns the round ids of the handled statuses, the counters and logs.
func serve(t *testing.T, sub *fakeSub, cfg wire.ServeConfig, h wire.Handler) ([]uint64, *wire.Counters, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	cfg.Log = zap.New(core)
	cfg.Counters = new(wire.Counters)
	if cfg.Keys == nil {
		cfg.Keys = wiretest.Keys()
	}
	if cfg.Limits == (wire.Limits{}) {
		cfg.Limits = wiretest.Limits()
	}
	var got []uint64
	handler := func(ctx context.Context, in wire.Inbound) error {
		if st, ok := in.Env.Msg.(*fedgepb.Status); ok {
			got = append(got, st.RoundId)
		}
		if h != nil {
			return h(ctx, in)
		}
		return nil
	}
	if err := sub.Unsubscribe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := wire.Serve(context.Background(), sub, cfg, handler); err != nil {
		t.Fatalf("Serve returned %v after the channel closed", err)
	}
	return got, cfg.Counters, logs
}

// TestServeSurvivesEveryBadInput feeds each bad message of the shared table
// followed by a good one, and checks that every good one is handled, every
// bad one is counted under its reason and logged with topic, sender and
// reason, and the loop never stops.
func TestServeSurvivesEveryBadInput(t *testing.T) {
	cases := wiretest.Cases()
	sub := newFakeSub(2 * len(cases))
	wantReasons := map[wire.Reason]uint64{}
	var bad []wiretest.Case
	accepted := 0
	for _, c := range cases {
		if c.Reason == wire.ReasonNone {
			sub.send(c.Topic, c.Raw)
			accepted++
			continue
		}
		bad = append(bad, c)
		wantReasons[c.Reason]++
		sub.send(c.Topic, c.Raw)
		sub.send(goodStatus(t, uint64(1000+len(bad))))
	}
	got, counters, logs := serve(t, sub, wire.ServeConfig{}, nil)

	var wantSeq []uint64
	for i := range bad {
		wantSeq = append(wantSeq, uint64(1000+i+1))
	}
	var gotSeq []uint64
	for _, s := range got {
		if s >= 1000 {
			gotSeq = append(gotSeq, s)
		}
	}
	if fmt.Sprint(gotSeq) != fmt.Sprint(wantSeq) {
		t.Fatalf("good messages after bad ones handled: %v, want %v", gotSeq, wantSeq)
	}
	snap := counters.Snapshot()
	if snap.Accepted != uint64(accepted+len(bad)) {
		t.Errorf("accepted %d, want %d", snap.Accepted, accepted+len(bad))
	}
	if fmt.Sprint(snap.Rejected) != fmt.Sprint(wantReasons) {
		t.Errorf("rejections %v, want %v", snap.Rejected, wantReasons)
	}
	rejected := logs.FilterMessage("message rejected").All()
	if len(rejected) != len(bad) {
		t.Fatalf("%d rejection logs, want %d", len(rejected), len(bad))
	}
	for i, e := range rejected {
		f := e.ContextMap()
		if e.Level != zapcore.WarnLevel || f["topic"] != bad[i].Topic || f["reason"] != string(bad[i].Reason) {
			t.Errorf("log %d for %q: level %v fields %v", i, bad[i].Name, e.Level, f)
		}
		if _, ok := f["sender"]; !ok {
			t.Errorf("log %d has no sender field", i)
		}
	}
}

// TestServeAcceptanceBadInputs: the five bad inputs of issue 2's
// acceptance point 4, each rejected with a logged reason and counted while
// the daemon keeps serving.
func TestServeAcceptanceBadInputs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason wire.Reason
	}{
		{"garbage", wire.ReasonMalformed},
		{"truncated", wire.ReasonMalformed},
		{"unknown version 2", wire.ReasonUnknownVersion},
		{"oversize message", wire.ReasonTooLarge},
		{"chunk hash mismatch", wire.ReasonHashMismatch},
		{"sender mismatch", wire.ReasonSenderMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := wiretest.Find(tc.name)
			if c.Reason != tc.reason {
				t.Fatalf("table says %q", c.Reason)
			}
			sub := newFakeSub(2)
			sub.send(c.Topic, c.Raw)
			sub.send(goodStatus(t, 1))
			got, counters, logs := serve(t, sub, wire.ServeConfig{}, nil)
			if len(got) != 1 || got[0] != 1 {
				t.Fatalf("good message after %q not handled: %v", tc.name, got)
			}
			if counters.Count(tc.reason) != 1 {
				t.Fatalf("counters %v", counters.Snapshot())
			}
			l := logs.FilterField(zap.String("reason", string(tc.reason))).All()
			if len(l) != 1 || l[0].ContextMap()["topic"] != c.Topic {
				t.Fatalf("logs %v", logs.All())
			}
		})
	}
}

// TestServeDropsRedeliveries: a QoS 1 redelivery is handled once; with a
// small ring the oldest id is forgotten.
func TestServeDropsRedeliveries(t *testing.T) {
	topic, a := goodStatus(t, 1)
	_, b := goodStatus(t, 2)
	_, c := goodStatus(t, 3)
	sub := newFakeSub(8)
	for _, raw := range [][]byte{a, a, b, a, c, a} {
		sub.send(topic, raw)
	}
	got, counters, logs := serve(t, sub, wire.ServeConfig{DedupSize: 2}, nil)
	// a, (a dup), b, (a dup), c evicts a, a again.
	if fmt.Sprint(got) != "[1 2 3 1]" {
		t.Fatalf("handled %v", got)
	}
	if counters.Count(wire.ReasonDuplicate) != 2 || counters.Snapshot().Accepted != 4 {
		t.Fatalf("counters %+v", counters.Snapshot())
	}
	for _, e := range logs.FilterField(zap.String("reason", "duplicate")).All() {
		if e.Level != zapcore.DebugLevel {
			t.Fatalf("duplicate logged at %v", e.Level)
		}
	}
}

// TestServeHandlerFailures: a panicking handler is recovered and counted and
// its message may be redelivered; handler errors are counted by their
// reason and the message is not handled twice.
func TestServeHandlerFailures(t *testing.T) {
	topic, panics := goodStatus(t, 1)
	_, stale := goodStatus(t, 2)
	_, plain := goodStatus(t, 3)
	_, ok := goodStatus(t, 4)
	_, shared := goodStatus(t, 5)
	sharedErr := wire.Reject("not_selected", "device not selected")
	sub := newFakeSub(16)
	for _, raw := range [][]byte{panics, stale, plain, panics, stale, plain, ok, shared} {
		sub.send(topic, raw)
	}
	calls := map[uint64]int{}
	h := func(_ context.Context, in wire.Inbound) error {
		id := in.Env.Msg.(*fedgepb.Status).RoundId
		calls[id]++
		switch {
		case id == 1 && calls[id] == 1:
			var m map[string]int
			m["boom"] = 1 // nil map write panics
		case id == 2:
			return fmt.Errorf("round check: %w", wire.Reject("stale_round", "round %d is over", id))
		case id == 3:
			return errors.New("disk full")
		case id == 5:
			return sharedErr
		}
		return nil
	}
	got, counters, logs := serve(t, sub, wire.ServeConfig{}, h)
	if fmt.Sprint(got) != "[1 2 3 1 4 5]" {
		t.Fatalf("handled %v", got)
	}
	if sharedErr.Topic != "" || sharedErr.Sender != "" {
		t.Fatalf("Serve modified the handler's shared error: %+v", sharedErr)
	}
	s := counters.Snapshot()
	want := map[wire.Reason]uint64{wire.ReasonHandlerPanic: 1, "stale_round": 1, wire.ReasonHandlerError: 1,
		wire.ReasonDuplicate: 2, "not_selected": 1}
	if fmt.Sprint(s.Rejected) != fmt.Sprint(want) || s.Accepted != 2 {
		t.Fatalf("counters %+v, want rejections %v and 2 accepted", s, want)
	}
	p := logs.FilterField(zap.String("reason", "handler_panic")).All()
	if len(p) != 1 || !strings.Contains(fmt.Sprint(p[0].ContextMap()["error"]), "assignment to entry in nil map") {
		t.Fatalf("panic log %v", p)
	}
	if sr := logs.FilterField(zap.String("reason", "stale_round")).All(); len(sr) != 1 || sr[0].ContextMap()["sender"] != wiretest.Device {
		t.Fatalf("stale_round log %v", sr)
	}
}

func TestServeStops(t *testing.T) {
	cfg := wire.ServeConfig{Keys: wiretest.Keys()}
	if err := wire.Serve(context.Background(), newFakeSub(1), cfg, nil); err == nil {
		t.Fatalf("nil handler accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	sub := newFakeSub(1)
	go func() { done <- wire.Serve(ctx, sub, cfg, func(context.Context, wire.Inbound) error { return nil }) }()
	sub.send(goodStatus(t, 1))
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not stop on cancel")
	}
}

// TestServeWithoutKeysRejects: a missing key lookup rejects everything as
// unknown_sender instead of accepting unverified messages.
func TestServeWithoutKeysRejects(t *testing.T) {
	sub := newFakeSub(1)
	sub.send(goodStatus(t, 1))
	none := func(*wire.Envelope) (ed25519.PublicKey, error) { return nil, errors.New("no keys") }
	got, counters, _ := serve(t, sub, wire.ServeConfig{Keys: none}, nil)
	if len(got) != 0 || counters.Count(wire.ReasonUnknownSender) != 1 {
		t.Fatalf("handled %v, counters %v", got, counters.Snapshot())
	}
	topic, raw := goodStatus(t, 2)
	if _, err := wire.Accept(topic, raw, wire.Limits{}, nil); !errors.Is(err, wire.ErrUnknownSender) {
		t.Fatalf("Accept without keys: %v", err)
	}
}
