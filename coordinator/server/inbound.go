package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Refusal reasons of the driver, besides the machine's (round.Reason*).
const (
	ReasonTooLarge  = "too_large"  // an update blob over MaxDeltaBytes
	ReasonBlobFetch = "blob_fetch" // an update blob that could not be fetched (not acked: the agent resends)
)

// handle authenticates one inbound message and dispatches it. Envelope
// rejections (malformed, too large, unknown sender, bad signature, sender
// not matching the topic...) are counted in the wire counters and dropped:
// nothing unauthenticated is answered.
func (s *Server) handle(ctx context.Context, m transport.Message) error {
	s.metrics.bytesIn(len(m.Payload))
	env, err := wire.Accept(m.Topic, m.Payload, s.limits, s.keys)
	if err != nil {
		r := wire.ReasonOf(err)
		s.wireCnt.Rejected(r)
		s.metrics.messageRejected(string(r))
		s.rejLog.Warn("message rejected", zap.String("topic", m.Topic), zap.String("reason", string(r)), zap.Error(err))
		return nil
	}
	s.wireCnt.Accepted()
	var herr error
	switch p := env.Msg.(type) {
	case *fedgepb.Hello:
		herr = s.presence(ctx, p.DeviceId, true, p.Capabilities)
	case *fedgepb.Status:
		herr = s.presence(ctx, p.DeviceId, p.State != fedgepb.DeviceState_DEVICE_STATE_OFFLINE, nil)
		if herr == nil && p.State == fedgepb.DeviceState_DEVICE_STATE_DROPPED {
			herr = s.dropped(ctx, p)
		}
	case *fedgepb.EnrollRequest:
		herr = s.enroll(ctx, p)
	case *fedgepb.Update:
		herr = s.update(ctx, env.MessageID, p)
	case *fedgepb.EvaluateResult:
		herr = s.step(ctx, round.EvalResultReceived{MessageID: env.MessageID, Result: p})
	case *fedgepb.SecAggMessage:
		herr = s.secureMessage(ctx, env.Sender, p)
	default:
		herr = fmt.Errorf("unexpected payload %v", env.Type)
	}
	if herr != nil && !errors.Is(herr, errFatal) {
		s.rejLog.Warn("message not handled", zap.String("topic", m.Topic), zap.String("sender", env.Sender), zap.Error(herr))
		return nil
	}
	return herr
}

// presence records a device online or offline and tells the machine.
func (s *Server) presence(ctx context.Context, id string, online bool, caps *fedgepb.Capabilities) error {
	rec, err := s.devices.Presence(ctx, id, online, caps, s.nowMs())
	if err != nil || rec == nil {
		return err
	}
	b := &store.Batch{Devices: []*store.Device{rec}}
	if err := s.st.Apply(ctx, b); err != nil {
		return fmt.Errorf("%w: persist presence of %s: %v", errFatal, id, err)
	}
	s.devices.Committed(b)
	var ev round.Event = round.DeviceOffline{Device: id}
	if online {
		s.online[id] = true
		ev = round.DeviceOnline{Device: id, Caps: rec.Capabilities}
	} else {
		delete(s.online, id)
	}
	s.metrics.setOnline(len(s.online))
	return s.step(ctx, ev)
}

// dropped tells the machine a device gave up its task of a round (the
// envelope's checks bound the reason and require the round).
func (s *Server) dropped(ctx context.Context, st *fedgepb.Status) error {
	s.log.Info("device dropped its task", zap.String("device", st.DeviceId), zap.Uint64("round", st.RoundId), zap.String("reason", st.Reason))
	return s.step(ctx, round.DeviceDropped{Device: st.DeviceId, RoundID: st.RoundId, Reason: st.Reason})
}

// enroll answers an enrollment request after persisting its outcome.
func (s *Server) enroll(ctx context.Context, req *fedgepb.EnrollRequest) error {
	resp, b, err := s.devices.Enroll(ctx, req, s.nowMs())
	if err != nil {
		return err
	}
	if !b.Empty() {
		if resp.Accepted {
			b.Audit = append(b.Audit, &store.AuditEntry{UnixMs: s.nowMs(), Actor: "device:" + req.DeviceId, Action: "device.enroll", Target: req.DeviceId, Detail: "token"})
		}
		if err := s.st.Apply(ctx, b); err != nil {
			return fmt.Errorf("%w: persist enrollment of %s: %v", errFatal, req.DeviceId, err)
		}
		s.devices.Committed(b)
	}
	s.log.Info("enrollment", zap.String("device", req.DeviceId), zap.Bool("accepted", resp.Accepted),
		zap.Bool("pending", resp.PendingApproval), zap.String("reason", resp.Reason))
	return s.publish(ctx, topics.DeviceIn(s.cfg.Fleet, req.DeviceId, topics.KindEnroll), fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE, resp, false)
}

// update passes an inline update to the machine, or fetches its delta
// blob first (in the background) when it can still be aggregated.
func (s *Server) update(ctx context.Context, msgID []byte, u *fedgepb.Update) error {
	if len(u.DeltaBlobId) == 0 && u.Codec == fedgepb.Codec_CODEC_SECAGG {
		return s.secureUpdate(ctx, msgID, u, u.EncodedDelta)
	}
	if len(u.DeltaBlobId) == 0 {
		return s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: u})
	}
	if u.DeltaLength > s.cfg.MaxDeltaBytes {
		return s.step(ctx, round.UpdateRefused{MessageID: msgID, Device: u.DeviceId, RoundID: u.RoundId, Reason: ReasonTooLarge})
	}
	st := s.m.Status()
	if st.RoundID != u.RoundId || st.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
		// Not aggregatable whatever the delta: the machine refuses it (or
		// records it late, or re-acks it) without the blob.
		return s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: u})
	}
	if s.m.Reported(u.DeviceId, u.RoundId) {
		// A resend of an update already on disk (our ack was lost, or
		// crossed the resend): re-acknowledge it without fetching a blob the
		// device may have deleted already.
		return s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: u})
	}
	id, err := blobID(u.DeltaBlobId)
	if err != nil {
		return s.step(ctx, round.UpdateRefused{MessageID: msgID, Device: u.DeviceId, RoundID: u.RoundId, Reason: round.ReasonBadEncoding})
	}
	key := u.DeviceId + "/" + id.String()
	if s.fetching[key] {
		return nil // a resend while the first copy is being fetched
	}
	s.fetching[key] = true
	origin := blob.Device(s.cfg.Fleet, u.DeviceId)
	go func() {
		s.fetchSem <- struct{}{}
		fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
		data, ferr := s.receiver.Fetch(fctx, origin, id)
		cancel()
		<-s.fetchSem
		s.post(ctx, func(ctx context.Context) error {
			delete(s.fetching, key)
			return s.fetched(ctx, msgID, u, origin, id, data, ferr)
		})
	}()
	return nil
}

// fetched continues an update whose delta blob arrived (or did not).
func (s *Server) fetched(ctx context.Context, msgID []byte, u *fedgepb.Update, origin blob.Origin, id blob.ID, data []byte, ferr error) error {
	if ferr != nil {
		s.wireCnt.Rejected(wire.Reason(ReasonBlobFetch))
		s.metrics.messageRejected(ReasonBlobFetch)
		if errors.Is(ferr, context.Canceled) {
			return nil
		}
		return fmt.Errorf("fetch delta of %s round %d: %w", u.DeviceId, u.RoundId, ferr)
	}
	s.metrics.bytesIn(len(data))
	// The blob is ours now; clear the device's retained descriptor.
	if err := s.tr.Publish(ctx, origin.DescriptorTopic(id), nil, transport.PublishOptions{Retain: true}); err != nil {
		s.log.Debug("clear update blob descriptor", zap.Error(err))
	}
	if uint64(len(data)) != u.DeltaLength {
		return s.step(ctx, round.UpdateRefused{MessageID: msgID, Device: u.DeviceId, RoundID: u.RoundId, Reason: round.ReasonBadEncoding})
	}
	if u.Codec == fedgepb.Codec_CODEC_SECAGG {
		return s.secureUpdate(ctx, msgID, u, data)
	}
	full := proto.Clone(u).(*fedgepb.Update)
	full.EncodedDelta = data
	return s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: full})
}

func blobID(b []byte) (blob.ID, error) {
	var id blob.ID
	if len(b) != len(id) {
		return id, fmt.Errorf("blob id of %d bytes", len(b))
	}
	copy(id[:], b)
	return id, nil
}

// codecIDs maps the wire codec to the aggregation codec's header id.
var codecIDs = map[fedgepb.Codec]codec.ID{
	fedgepb.Codec_CODEC_UNSPECIFIED: codec.Float32,
	fedgepb.Codec_CODEC_FLOAT32:     codec.Float32,
	fedgepb.Codec_CODEC_FLOAT16:     codec.Float16,
	fedgepb.Codec_CODEC_INT8:        codec.Int8,
	fedgepb.Codec_CODEC_TOPK:        codec.TopK,
}

// decodeDelta is the machine's DecodeFunc: the aggregation codecs, whose
// self-describing header must name the codec the update claims. A header
// declaring another dimension yields an empty delta, which the machine
// refuses as wrong_shape (without allocating what the header claims).
//
// A CODEC_SECAGG update reaches the machine only from secureUpdate, with its
// masked input taken out (the secure aggregator consumes it): it decodes
// to zeros, which that aggregator ignores. Any other SECAGG delta is refused.
func decodeDelta(c fedgepb.Codec, b []byte, dim int) ([]float32, error) {
	if c == fedgepb.Codec_CODEC_SECAGG {
		if len(b) != 0 {
			return nil, errors.New("a secure aggregation masked input outside a secure round")
		}
		return make([]float32, dim), nil
	}
	want, ok := codecIDs[c]
	if !ok {
		return nil, fmt.Errorf("codec %v not supported", c)
	}
	if len(b) < codec.HeaderSize {
		return nil, fmt.Errorf("delta of %d bytes: %w", len(b), codec.ErrHeader)
	}
	if codec.ID(b[0]) != want {
		return nil, fmt.Errorf("delta encoded as %v, update says %v: %w", codec.ID(b[0]), c, codec.ErrHeader)
	}
	if declared := binary.LittleEndian.Uint32(b[2:6]); int64(declared) != int64(dim) {
		return nil, nil
	}
	dst := make([]float32, dim)
	if _, err := codec.Decode(dst, b); err != nil {
		if errors.Is(err, codec.ErrNonFinite) && dim > 0 {
			// Well-formed but not finite: let the machine count it as such.
			dst[0] = float32(math.NaN())
			return dst, nil
		}
		return nil, err
	}
	return dst, nil
}

// countRejections exports the machine's refusal counters that moved.
func (s *Server) countRejections() {
	if s.metrics == nil {
		return
	}
	for reason, n := range s.m.Counters() {
		if d := n - s.lastCount[reason]; d > 0 {
			s.metrics.updateRefused(reason, d)
			s.lastCount[reason] = n
		}
	}
}

// openBlobRequest authenticates a device's request for model chunks: a
// signed envelope from an approved device, on its own request topic. It
// runs on the blob sender's goroutine; the device table is safe to share.
func (s *Server) openBlobRequest(topic string, payload []byte) (*fedgepb.BlobRequest, string, error) {
	req, dev, err := wire.BlobRequestOpener(s.limits, s.keys, func(r wire.Reason) {
		s.wireCnt.Rejected(r)
		s.metrics.messageRejected(string(r))
	})(topic, payload)
	if err == nil && !s.devices.Approved(dev) {
		err = fmt.Errorf("blob request from %q, which is not an approved device", dev)
	}
	return req, dev, err
}
