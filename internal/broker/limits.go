package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
)

// Defaults of the per-device limits, filled in by New.
const (
	// DefaultDevicePublishRate is the sustained publishes per second a
	// device may make. A device fetching a model asks for one chunk per
	// chunk received, so this bounds its download at rate x chunk size
	// (125 MiB/s in 256 KiB chunks), beyond any device's link; a flooding
	// device gets about 1% of the 45,000 QoS 1 publishes a second the broker
	// delivers on two cores (BenchmarkPublishQoS1).
	DefaultDevicePublishRate = 500
	// DefaultDevicePublishBurst is how many publishes a device may make at
	// once after being quiet.
	DefaultDevicePublishBurst = 5000
	// DefaultMaxDeviceRetained is how many retained blob descriptors one
	// device may have at once (it withdraws each after the coordinator has
	// fetched the blob, and the coordinator clears it too).
	DefaultMaxDeviceRetained = 8
	// DefaultMaxDeviceRetainedPayload bounds one retained descriptor: the
	// descriptor of a 1 GiB blob in 256 KiB chunks is about 140 KB.
	DefaultMaxDeviceRetainedPayload = 256 << 10
)

// bucket is a token bucket: it holds up to burst tokens, refills at rate
// per second, and each publish takes one.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// take reports whether a token was available at now, and takes it.
func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(float64(burst), b.tokens+dt*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// allowRate takes a token from the bucket of the device's user name (kept
// across reconnects, so reconnecting does not refill it). Coordinators are
// not limited.
func (h *authHook) allowRate(user string, id topics.Identity) bool {
	cfg := &h.b.cfg
	if id.Role != topics.RoleDevice || cfg.DevicePublishRate < 0 {
		return true
	}
	v, ok := h.buckets.Load(user)
	if !ok {
		v, _ = h.buckets.LoadOrStore(user, new(bucket))
	}
	return v.(*bucket).take(h.b.now(), cfg.DevicePublishRate, cfg.DevicePublishBurst)
}

// checkRetain applies the retained-message policy to a publish that passed
// the ACL: a device may retain only its own blob descriptors
// (topics.RetainAllowed), each at most MaxDeviceRetainedPayload bytes, and
// at most MaxDeviceRetained at a time. Clearing one (an empty retained
// payload) is always allowed where retaining is. It returns the reason of a
// refusal, or "".
func (h *authHook) checkRetain(id topics.Identity, pk packets.Packet) (string, packets.Code) {
	if !pk.FixedHeader.Retain || id.Role != topics.RoleDevice {
		return "", packets.CodeSuccess
	}
	cfg := &h.b.cfg
	switch {
	case !topics.RetainAllowed(id, pk.TopicName):
		return "devices may retain only their blob descriptors (" + topics.RetainedDeviceBlobDescriptor + ")", packets.ErrNotAuthorized
	case len(pk.Payload) == 0:
		return "", packets.CodeSuccess
	case len(pk.Payload) > cfg.MaxDeviceRetainedPayload:
		return "retained payload over the device limit", packets.ErrPacketTooLarge
	}
	n := 0
	for _, m := range h.srv.Topics.Messages(topics.FleetRoot(id.Fleet) + "/dev/" + id.ID + "/out/#") {
		if m.TopicName != pk.TopicName {
			n++
		}
	}
	if n >= cfg.MaxDeviceRetained {
		return "device holds the most retained descriptors allowed", packets.ErrQuotaExceeded
	}
	return "", packets.CodeSuccess
}

// limitPublish applies the per-device rate limit and the retained policy
// to a publish the ACL allows; a non-nil error drops it (see rejectCode).
func (h *authHook) limitPublish(cl *mqtt.Client, user string, id topics.Identity, pk packets.Packet) error {
	if !h.allowRate(user, id) {
		h.b.stats.rateLimited.Add(1)
		h.b.denyLog.Warn("publish dropped", zap.String("reason", "device publish rate over limit"),
			zap.String("client", cl.ID), zap.String("topic", pk.TopicName),
			zap.Float64("rate", h.b.cfg.DevicePublishRate), zap.Int("burst", h.b.cfg.DevicePublishBurst))
		return rejectCode(cl, pk, packets.ErrQuotaExceeded)
	}
	if reason, code := h.checkRetain(id, pk); reason != "" {
		h.b.stats.retainDenied.Add(1)
		h.b.denyLog.Warn("publish dropped", zap.String("reason", reason),
			zap.String("client", cl.ID), zap.String("topic", pk.TopicName), zap.Int("payload_len", len(pk.Payload)))
		return rejectCode(cl, pk, code)
	}
	return nil
}
