package server

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

type protoMessage = proto.Message

// manifestSigner signs manifests with the coordinator key.
type manifestSigner struct{ key ed25519.PrivateKey }

func (m manifestSigner) SignManifest(man *fedgepb.ModelManifest) error {
	return wire.SignManifest(man, m.key)
}

func (s *Server) sealWith(typ fedgepb.PayloadType, msg protoMessage) ([]byte, error) {
	return wire.Seal(s.cfg.Key, wire.CoordinatorID, typ, msg, s.clk.Now())
}

// keptWeightBlobs is how many model weight blobs stay offered (the current
// version and its predecessors, for agents still fetching).
const keptWeightBlobs = 3

// flush drains the machine's Ready: persist, then publish, then Advance.
func (s *Server) flush(ctx context.Context) error {
	for s.m.HasReady() {
		rd := s.m.Ready()
		s.fault(FaultBeforePersist)
		if !rd.Batch.Empty() {
			if err := s.st.Apply(ctx, &rd.Batch); err != nil {
				return fmt.Errorf("%w: persist ready batch: %v", errFatal, err)
			}
		}
		s.fault(FaultAfterPersist)
		prevSec := s.sec
		s.secureReady(ctx, &rd)
		half := len(rd.Messages) / 2
		for i, msg := range rd.Messages {
			if i == half && half > 0 {
				s.fault(FaultMidPublish)
			}
			if err := s.publishMessage(ctx, msg); err != nil {
				// Messages are idempotent and republished after a restart;
				// agents resend unacknowledged updates.
				s.log.Warn("publish failed", zap.Stringer("kind", msg.Kind), zap.String("device", msg.Device), zap.Error(err))
			}
		}
		if s.sec != nil && s.sec != prevSec {
			s.secureStarted(ctx, s.sec)
		}
		s.fault(FaultAfterPublish)
		s.m.Advance()
		s.observe(ctx, rd)
		for len(s.secFailed) > 0 {
			ev := s.secFailed[0]
			s.secFailed = s.secFailed[1:]
			if err := s.m.Step(ev); err != nil {
				return fmt.Errorf("secure round %d: %w", ev.RoundID, err)
			}
		}
	}
	return nil
}

// observe updates metrics and starts server-side evaluations after a Ready.
func (s *Server) observe(ctx context.Context, rd round.Ready) {
	if !s.restoring {
		n := 0
		for _, msg := range rd.Messages {
			if msg.Kind == round.MsgAck && msg.Ack.Accepted && msg.Ack.Reason == "" && msg.Task == nil {
				n++
			}
		}
		s.metrics.updatesAcceptedAdd(n)
	}
	for _, c := range rd.Commits {
		s.log.Info("round committed", zap.Uint64("run", c.RunID), zap.Uint64("round", c.RoundID),
			zap.Uint64("version", c.Version), zap.Int("participants", c.Participants))
		s.metrics.roundCommitted(c.Version)
	}
	for _, met := range rd.Batch.Metrics {
		s.metrics.roundFinished(met)
		s.log.Info("round finished", zap.Uint64("round", met.RoundId), zap.Bool("failed", met.Failed),
			zap.Uint32("accepted", met.Accepted), zap.Float64("train_accuracy", met.TrainAccuracy),
			zap.Float64("eval_accuracy", met.EvalAccuracy), zap.Float64("server_accuracy", met.ServerAccuracy))
	}
	for _, r := range rd.Ended {
		s.log.Info("run ended", zap.Uint64("run", r.RunId), zap.Stringer("state", r.State), zap.String("reason", r.Reason))
		s.strat.reset()
	}
	if len(rd.Commits) > 0 {
		s.maybeEvaluate(ctx)
	}
}

func (s *Server) publish(ctx context.Context, topic string, typ fedgepb.PayloadType, msg protoMessage, retain bool) error {
	raw, err := s.seal(typ, msg)
	if err != nil {
		return fmt.Errorf("seal %v: %w", typ, err)
	}
	if err := s.tr.Publish(ctx, topic, raw, transport.PublishOptions{Retain: retain}); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	s.metrics.bytesOut(len(raw))
	return nil
}

func (s *Server) publishMessage(ctx context.Context, msg round.Message) error {
	f := s.cfg.Fleet
	switch msg.Kind {
	case round.MsgTask:
		t, ok := s.secureTask(msg.Task)
		if !ok {
			return nil // a secure round without its protocol is being failed
		}
		return s.publish(ctx, topics.DeviceIn(f, msg.Device, topics.KindTask), fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, t, false)
	case round.MsgAck:
		ack := msg.Ack
		if ack.Accepted && ack.Reason != "" {
			// internal/wire forbids a reason on an accepted ack; the machine
			// gives one for redeliveries (already_stored). Agents need only
			// "accepted".
			ack = proto.Clone(ack).(*fedgepb.Ack)
			ack.Reason = ""
		}
		return s.publish(ctx, topics.DeviceIn(f, msg.Device, topics.KindAck), fedgepb.PayloadType_PAYLOAD_TYPE_ACK, ack, false)
	case round.MsgAnnouncement:
		return s.publish(ctx, topics.Round(f), fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_ANNOUNCEMENT, msg.Announcement, true)
	case round.MsgManifest:
		return s.publishModel(ctx, msg.Model)
	}
	return fmt.Errorf("unknown message kind %v", msg.Kind)
}

// publishModel offers a version's module and weights as blobs, then
// publishes its signed manifest, retained.
func (s *Server) publishModel(ctx context.Context, mv *store.ModelVersion) error {
	man := &fedgepb.ModelManifest{}
	if err := proto.Unmarshal(mv.Manifest, man); err != nil {
		return fmt.Errorf("manifest of version %d: %w", mv.Version, err)
	}
	mod, err := s.cfg.Models.Get(ctx, mv.ModelId)
	if err != nil {
		return fmt.Errorf("module of version %d: %w", mv.Version, err)
	}
	if string(mod.Hash[:]) != string(man.WasmHash) {
		return fmt.Errorf("version %d: registered module %s does not match the manifest's wasm hash", mv.Version, mv.ModelId)
	}
	if _, err := s.sender.Offer(ctx, mod.Wasm); err != nil {
		return err
	}
	if _, err := s.sender.Offer(ctx, mv.Weights); err != nil {
		return err
	}
	id := blob.Sum(mv.Weights)
	s.offered = append(s.offered, id)
	for len(s.offered) > keptWeightBlobs {
		old := s.offered[0]
		s.offered = s.offered[1:]
		if !contains(s.offered, old) {
			if err := s.sender.Withdraw(ctx, old); err != nil {
				s.log.Warn("withdraw old weights", zap.Error(err))
			}
		}
	}
	return s.publish(ctx, topics.Manifest(s.cfg.Fleet), fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, man, true)
}

func contains(ids []blob.ID, id blob.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
