package broker

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogToZap forwards mochi's log/slog records to our zap logger so the
// broker prints nothing of its own. mochi's Info records are start-up
// chatter and become Debug; its Warn records are mostly misbehaving clients
// and become Info; Error becomes Warn because a broker error concerns one
// client, never the process. Packets attached to records are reduced to
// type, topic and payload length so payloads never reach the log.
type slogToZap struct {
	log    *zap.Logger
	prefix string       // group prefix for attribute keys
	off    *atomic.Bool // set once the broker is closed: mochi's event loop may still log
}

func newSlog(log *zap.Logger, off *atomic.Bool) *slog.Logger {
	return slog.New(&slogToZap{log: log.Named("mochi"), off: off})
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.WarnLevel
	case l >= slog.LevelWarn:
		return zapcore.InfoLevel
	default:
		return zapcore.DebugLevel
	}
}

func (h *slogToZap) Enabled(_ context.Context, l slog.Level) bool {
	return !h.off.Load() && h.log.Core().Enabled(zapLevel(l))
}

func (h *slogToZap) Handle(_ context.Context, r slog.Record) error {
	if h.off.Load() {
		return nil
	}
	ce := h.log.Check(zapLevel(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *slogToZap) field(a slog.Attr) zap.Field {
	key := h.prefix + a.Key
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return zap.String(key, v.String())
	case slog.KindInt64:
		return zap.Int64(key, v.Int64())
	case slog.KindUint64:
		return zap.Uint64(key, v.Uint64())
	case slog.KindBool:
		return zap.Bool(key, v.Bool())
	case slog.KindDuration:
		return zap.Duration(key, v.Duration())
	case slog.KindFloat64:
		return zap.Float64(key, v.Float64())
	case slog.KindGroup:
		return zap.String(key, v.String())
	}
	switch x := v.Any().(type) {
	case packets.Packet:
		return packetField(key, &x)
	case *packets.Packet:
		return packetField(key, x)
	case error:
		return zap.NamedError(key, x)
	case []byte:
		return zap.Int(key+"_len", len(x))
	}
	return zap.Any(key, v.Any())
}

func packetField(key string, pk *packets.Packet) zap.Field {
	if pk == nil {
		return zap.Skip()
	}
	return zap.Dict(key,
		zap.Uint8("type", pk.FixedHeader.Type),
		zap.String("topic", pk.TopicName),
		zap.Int("payload_len", len(pk.Payload)))
}

func (h *slogToZap) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = h.field(a)
	}
	return &slogToZap{log: h.log.With(fields...), prefix: h.prefix, off: h.off}
}

func (h *slogToZap) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &slogToZap{log: h.log, prefix: h.prefix + name + ".", off: h.off}
}
