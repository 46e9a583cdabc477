package broker

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestSlogToZap(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var off atomic.Bool
	log := newSlog(zap.New(core), &off).With("listener", "tcp").WithGroup("g")
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("secret payload")}
	log.Debug("dbg")
	log.Info("started", "n", 3)
	log.Warn("error processing packet", "error", errors.New("boom"), "pk", pk, "raw", []byte("xyz"))
	log.Error("publish packet error", "packet", &pk, "ok", true)

	want := []struct {
		msg   string
		level zapcore.Level
	}{
		{"dbg", zapcore.DebugLevel},
		{"started", zapcore.DebugLevel},
		{"error processing packet", zapcore.InfoLevel},
		{"publish packet error", zapcore.WarnLevel},
	}
	entries := logs.All()
	if len(entries) != len(want) {
		t.Fatalf("got %d entries, want %d", len(entries), len(want))
	}
	for i, w := range want {
		e := entries[i]
		if e.Message != w.msg || e.Level != w.level || e.LoggerName != "mochi" {
			t.Errorf("entry %d = %q %v %q, want %q %v mochi", i, e.Message, e.Level, e.LoggerName, w.msg, w.level)
		}
		if e.ContextMap()["listener"] != "tcp" {
			t.Errorf("entry %d lost the With attribute: %v", i, e.ContextMap())
		}
	}
	warn := entries[2].ContextMap()
	pkField, ok := warn["g.pk"].(map[string]any)
	if !ok || pkField["topic"] != "a/b" || pkField["payload_len"] != int64(len(pk.Payload)) {
		t.Fatalf("packet not summarised: %#v", warn)
	}
	if warn["g.error"] != "boom" || warn["g.raw_len"] != int64(3) {
		t.Fatalf("error or bytes attribute wrong: %#v", warn)
	}
	for _, e := range entries {
		for _, f := range e.Context {
			if f.String == string(pk.Payload) {
				t.Fatalf("payload leaked into field %s", f.Key)
			}
		}
	}
}

func TestSlogLevelFiltering(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	var off atomic.Bool
	log := newSlog(zap.New(core), &off)
	log.Info("mochi chatter")
	log.Warn("client trouble")
	if logs.Len() != 1 || logs.All()[0].Message != "client trouble" {
		t.Fatalf("entries: %v", logs.All())
	}
	if log.Enabled(t.Context(), slog.LevelInfo) || !log.Enabled(t.Context(), slog.LevelWarn) {
		t.Fatal("Enabled does not follow the zap level")
	}
	off.Store(true)
	log.Error("after close")
	if logs.Len() != 1 || log.Enabled(t.Context(), slog.LevelError) {
		t.Fatal("records after close were not dropped")
	}
}
