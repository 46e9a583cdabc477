package agent

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/blob"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

type wireMsg = proto.Message

// apply carries out the machine's actions in order. A failure to persist
// is fatal to the session (nothing after it, in particular no publish, may
// happen); publish failures are logged and repaired by resends.
func (s *session) apply(ctx context.Context, acts []Action) error {
	a := s.a
	for _, act := range acts {
		switch x := act.(type) {
		case ActPersistTask:
			if err := a.o.State.PutTask(x.Task); err != nil {
				return fmt.Errorf("agent: persist task of round %d: %w", x.Task.RoundId, err)
			}
		case ActRun:
			s.run(ctx, x.Task, x.Version)
		case ActCancel:
			if c := s.cancels[x.Round]; c != nil {
				c()
				delete(s.cancels, x.Round)
			}
		case ActFetch:
			s.fetch(ctx, x.Manifest)
		case ActFinish:
			delete(s.cancels, x.Pending.RoundID)
			if err := a.o.State.FinishTask(x.Pending); err != nil {
				return fmt.Errorf("agent: persist result of round %d: %w", x.Pending.RoundID, err)
			}
		case ActPublish:
			s.publishPending(ctx, x.Pending)
		case ActAcked:
			if err := a.o.State.Acked(x.Round); err != nil {
				return fmt.Errorf("agent: record ack of round %d: %w", x.Round, err)
			}
			if id, ok := s.offered[x.Round]; ok {
				delete(s.offered, x.Round)
				if err := s.send.Withdraw(ctx, id); err != nil {
					a.log.Debug("withdraw delta blob", zap.Error(err))
				}
			}
			a.count(func(st *stats) {
				st.acked++
				if !x.Accepted {
					st.refused++
				}
			})
			a.log.Info("result acknowledged", zap.Uint64("round", x.Round), zap.Bool("accepted", x.Accepted), zap.String("reason", x.Reason))
		case ActDrop:
			delete(s.cancels, x.Round)
			if err := a.o.State.DropTask(x.Round); err != nil {
				return fmt.Errorf("agent: drop task of round %d: %w", x.Round, err)
			}
			a.count(func(st *stats) { st.dropped++ })
			a.log.Warn("task refused", zap.Uint64("round", x.Round), zap.String("reason", x.Reason))
			st := &fedgepb.Status{DeviceId: a.o.DeviceID, State: fedgepb.DeviceState_DEVICE_STATE_DROPPED, RoundId: x.Round,
				Reason: truncateUTF8(x.Reason, wire.DefaultLimits().MaxStringBytes)}
			if ref, ok := s.m.Active(); ok {
				st.InstalledModelVersion = ref.Version
			}
			s.publishMsg(ctx, topics.KindStatus, fedgepb.PayloadType_PAYLOAD_TYPE_STATUS, st)
		case ActIgnore:
			a.count(func(st *stats) { st.ignored[x.What]++ })
			a.log.Info("ignored", zap.String("what", x.What), zap.String("reason", x.Reason))
		default:
			panic(fmt.Sprintf("agent: unknown action %T", act))
		}
	}
	return nil
}

func (s *session) publishPending(ctx context.Context, p Pending) {
	a := s.a
	if p.Blob != nil {
		if _, err := s.send.Offer(ctx, p.Blob); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("offer delta blob", zap.Uint64("round", p.RoundID), zap.Error(err))
			}
			return
		}
		s.offered[p.RoundID] = blob.Sum(p.Blob)
	}
	err := s.tr.Publish(ctx, topics.DeviceOut(a.o.Fleet, a.o.DeviceID, topics.KindUpdate), p.Envelope, transport.PublishOptions{})
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("publish result", zap.Uint64("round", p.RoundID), zap.Error(err))
		}
		return
	}
	a.count(func(st *stats) { st.published++ })
}

// run trains or evaluates t in the background and posts EvTaskDone. A
// task interrupted by the end of the session posts nothing: it stays
// persisted and runs again on the next Run.
func (s *session) run(ctx context.Context, t *fedgepb.RoundTask, version uint64) {
	a := s.a
	rctx, cancel := context.WithTimeout(ctx, a.o.MaxTaskTime)
	s.cancels[t.RoundId] = cancel
	a.count(func(st *stats) { st.tasks++ })
	a.log.Info("task started", zap.Uint64("round", t.RoundId), zap.Stringer("kind", t.Kind), zap.Uint64("model_version", version))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		p, err := s.runTask(rctx, t, version)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.Canceled) {
			return // cancelled for a newer task
		}
		s.post(ctx, EvTaskDone{Round: t.RoundId, Result: p, Err: err})
	}()
}

func (s *session) runTask(ctx context.Context, t *fedgepb.RoundTask, version uint64) (Pending, error) {
	a := s.a
	m, err := a.o.Models.Load(version)
	if err != nil {
		return Pending{}, err
	}
	var res result
	if t.Kind == fedgepb.TaskKind_TASK_KIND_TRAIN && t.Secagg != nil {
		res, err = s.runSecure(ctx, t, m)
	} else {
		err = s.withSlot(ctx, func() error {
			var err error
			res, err = s.runner.run(ctx, t, m)
			return err
		})
	}
	if err != nil {
		return Pending{}, err
	}
	return s.sealResult(t, res)
}

// fetch downloads, checks and installs a model in the background and posts
// EvModelInstalled or EvModelFailed.
func (s *session) fetch(ctx context.Context, mf *fedgepb.ModelManifest) {
	a := s.a
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fctx, cancel := context.WithTimeout(ctx, a.o.FetchTimeout)
		defer cancel()
		ev := s.install(fctx, mf)
		if ctx.Err() != nil {
			return
		}
		if _, ok := ev.(EvModelInstalled); ok {
			a.count(func(st *stats) { st.installed++ })
			a.log.Info("model installed", zap.String("model", mf.ModelId), zap.Uint64("version", mf.Version))
		}
		s.post(ctx, ev)
	}()
}

func (s *session) install(ctx context.Context, mf *fedgepb.ModelManifest) Event {
	a := s.a
	fail := func(transient bool, err error) Event {
		return EvModelFailed{Manifest: mf, Reason: err.Error(), Transient: transient}
	}
	var parts [2][]byte
	for i, h := range [][]byte{mf.WasmHash, mf.WeightsHash} {
		b, err := s.getBlob(ctx, h)
		if err != nil {
			return fail(true, err)
		}
		parts[i] = b
	}
	m := Model{Manifest: mf, Wasm: parts[0], Weights: parts[1]}
	if err := m.Check(); err != nil {
		return fail(false, err)
	}
	mod, err := a.o.Host.Compile(ctx, m.Wasm)
	if err != nil {
		return fail(false, err)
	}
	// The module's metadata is probed once per host, not per agent.
	md, err := mod.Metadata(ctx, runtimeOptions())
	if err != nil {
		return fail(false, err)
	}
	if params := md.Params; uint64(params) != mf.ParamCount {
		return fail(false, fmt.Errorf("module declares %d parameters, manifest says %d", params, mf.ParamCount))
	}
	if err := a.o.Models.Install(m); err != nil {
		return fail(true, err)
	}
	return EvModelInstalled{Manifest: mf}
}

func (s *session) getBlob(ctx context.Context, hash []byte) ([]byte, error) {
	var id blob.ID
	copy(id[:], hash)
	if c := s.a.o.Blobs; c != nil {
		if b, ok := c.Get(id); ok && blob.Sum(b) == id {
			return b, nil
		}
	}
	b, err := s.recv.Fetch(ctx, blob.Coordinator(s.a.o.Fleet), id)
	if err != nil {
		return nil, err
	}
	if c := s.a.o.Blobs; c != nil {
		c.Put(id, b)
	}
	return b, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
