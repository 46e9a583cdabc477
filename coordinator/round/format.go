package round

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// String prints the Ready batch in a stable, line-per-action text form (used
// by the transcript tests and handy in debug logs).
func (rd Ready) String() string {
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	bt := &rd.Batch
	for _, r := range bt.DeleteUpdates {
		line("delete updates of round %d", r)
	}
	for _, r := range bt.Runs {
		line("persist run %s", FormatProto(r))
	}
	for _, r := range bt.Rounds {
		line("persist round %s", FormatProto(r))
	}
	for _, r := range bt.Updates {
		line("persist update %s", FormatProto(r))
	}
	for _, r := range bt.ModelVersions {
		line("persist model %s", FormatProto(r))
	}
	for _, r := range bt.Metrics {
		line("persist metrics %s", FormatProto(r))
	}
	for _, msg := range rd.Messages {
		switch msg.Kind {
		case MsgTask:
			line("publish task to %s %s", msg.Device, FormatProto(msg.Task))
		case MsgAck:
			line("publish ack to %s %s", msg.Device, FormatProto(msg.Ack))
		case MsgAnnouncement:
			line("publish announcement (retained) %s", FormatProto(msg.Announcement))
		case MsgManifest:
			line("publish manifest (retained) version=%d manifest=%s", msg.Model.Version, formatBytes(msg.Model.Manifest))
		}
	}
	for _, c := range rd.Commits {
		line("commit run=%d round=%d version=%d participants=%d", c.RunID, c.RoundID, c.Version, c.Participants)
	}
	for _, r := range rd.Ended {
		line("ended run %d %s: %s", r.RunId, enumName(r.State.Descriptor().Values().ByNumber(protoreflect.EnumNumber(r.State))), r.Reason)
	}
	return b.String()
}

// FormatEvent prints an event in the transcript form.
func FormatEvent(ev Event) string {
	switch e := ev.(type) {
	case Tick:
		return fmt.Sprintf("tick %d", e.NowUnixMs)
	case StartRun:
		return fmt.Sprintf("start run %d config=%s base=v%d", e.RunID, FormatProto(e.Config), e.Base.GetVersion())
	case Stop:
		return "stop " + strconv.Quote(e.Reason)
	case DeviceOnline:
		return fmt.Sprintf("online %s %s", e.Device, FormatProto(e.Caps))
	case DeviceOffline:
		return "offline " + e.Device
	case DeviceDropped:
		return fmt.Sprintf("dropped %s round=%d reason=%s", e.Device, e.RoundID, strconv.Quote(e.Reason))
	case UpdateReceived:
		return fmt.Sprintf("update msg=%s %s", formatBytes(e.MessageID), FormatProto(e.Update))
	case UpdateRefused:
		return fmt.Sprintf("refused msg=%s device=%s round=%d reason=%s", formatBytes(e.MessageID), e.Device, e.RoundID, e.Reason)
	case EvalResultReceived:
		return fmt.Sprintf("eval msg=%s %s", formatBytes(e.MessageID), FormatProto(e.Result))
	case EvalComputed:
		return fmt.Sprintf("server-eval round=%d loss=%s acc=%s", e.RoundID, formatFloat(e.Loss), formatFloat(e.Accuracy))
	case CloseTraining:
		return fmt.Sprintf("close-training round=%d reason=%s", e.RoundID, strconv.Quote(e.Reason))
	}
	return fmt.Sprintf("%T", ev)
}

// FormatProto prints a message as {field=value ...}: populated fields in
// declaration order, map entries by key, long bytes as length and hash.
// Unlike prototext its output is stable across releases.
func FormatProto(m proto.Message) string {
	if m == nil || !m.ProtoReflect().IsValid() {
		return "{}"
	}
	var b strings.Builder
	formatMessage(&b, m.ProtoReflect())
	return b.String()
}

func formatMessage(b *strings.Builder, m protoreflect.Message) {
	b.WriteByte('{')
	fields := m.Descriptor().Fields()
	first := true
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(string(fd.Name()))
		b.WriteByte('=')
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
			b.WriteByte('[')
			for j, k := range keys {
				if j > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(k.String() + ":")
				formatValue(b, fd.MapValue(), v.Map().Get(k))
			}
			b.WriteByte(']')
		case fd.IsList():
			b.WriteByte('[')
			for j := range v.List().Len() {
				if j > 0 {
					b.WriteByte(' ')
				}
				formatValue(b, fd, v.List().Get(j))
			}
			b.WriteByte(']')
		default:
			formatValue(b, fd, v)
		}
	}
	b.WriteByte('}')
}

func formatValue(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		formatMessage(b, v.Message())
	case protoreflect.BytesKind:
		b.WriteString(formatBytes(v.Bytes()))
	case protoreflect.StringKind:
		b.WriteString(strconv.Quote(v.String()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		b.WriteString(formatFloat(v.Float()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			b.WriteString(enumName(ev))
		} else {
			b.WriteString(strconv.Itoa(int(v.Enum())))
		}
	default:
		b.WriteString(v.String())
	}
}

// formatBytes prints up to 16 bytes as hex, longer ones as length and hash.
func formatBytes(p []byte) string {
	if len(p) <= 16 {
		return "0x" + hex.EncodeToString(p)
	}
	h := sha256.Sum256(p)
	return fmt.Sprintf("<%dB sha256:%s>", len(p), hex.EncodeToString(h[:4]))
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// enumName drops the UPPER_SNAKE enum type prefix: ROUND_PHASE_DONE -> DONE.
func enumName(v protoreflect.EnumValueDescriptor) string {
	var p strings.Builder
	for i, r := range string(v.Parent().Name()) {
		if i > 0 && unicode.IsUpper(r) {
			p.WriteByte('_')
		}
		p.WriteRune(unicode.ToUpper(r))
	}
	p.WriteByte('_')
	return strings.TrimPrefix(string(v.Name()), p.String())
}
