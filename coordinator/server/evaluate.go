package server

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// maybeEvaluate starts the server-side evaluation of the model the current
// round committed, if the run asks for one and it is not running yet.
func (s *Server) maybeEvaluate(ctx context.Context) {
	st := s.m.Status()
	if s.cfg.Evaluator == nil || st.Phase != fedgepb.RoundPhase_ROUND_PHASE_EVALUATING || s.evalDone[st.RoundID] {
		return
	}
	run, err := s.st.Run(ctx, st.RunID)
	if err != nil || !run.Config.ServerEvaluation {
		return
	}
	mv, err := s.st.ModelVersion(ctx, st.ModelVersion)
	if err != nil {
		s.log.Warn("server evaluation: load model", zap.Uint64("version", st.ModelVersion), zap.Error(err))
		return
	}
	w, err := round.DecodeWeights(mv.Weights, 0)
	if err != nil {
		s.log.Warn("server evaluation: weights", zap.Error(err))
		return
	}
	s.evalDone[st.RoundID] = true
	roundID, model := st.RoundID, mv.ModelId
	go func() {
		loss, acc, err := s.cfg.Evaluator.Evaluate(ctx, model, w)
		s.post(ctx, func(ctx context.Context) error {
			if err != nil {
				s.log.Warn("server evaluation failed", zap.Uint64("round", roundID), zap.Error(err))
				return nil
			}
			s.log.Info("server evaluation", zap.Uint64("round", roundID), zap.Float64("loss", loss), zap.Float64("accuracy", acc))
			return s.step(ctx, round.EvalComputed{RoundID: roundID, Loss: loss, Accuracy: acc})
		})
	}()
}

// TestSetEvaluator evaluates models on a fixed data set (e.g. the MNIST
// test set) with the WASM runtime.
type TestSetEvaluator struct {
	Models *registry.Models
	Data   data.Source
}

// Evaluate implements Evaluator.
func (e TestSetEvaluator) Evaluate(ctx context.Context, model string, weights []float32) (float64, float64, error) {
	mod, err := e.Models.Get(ctx, model)
	if err != nil {
		return 0, 0, err
	}
	cm, err := e.Models.Host().Compile(ctx, mod.Wasm)
	if err != nil {
		return 0, 0, fmt.Errorf("evaluate %s: %w", model, err)
	}
	in, err := cm.Instantiate(ctx, runtime.Options{})
	if err != nil {
		return 0, 0, fmt.Errorf("evaluate %s: %w", model, err)
	}
	defer func() { _ = in.Close(ctx) }()
	if err := in.SetParams(ctx, weights); err != nil {
		return 0, 0, fmt.Errorf("evaluate %s: %w", model, err)
	}
	res, err := in.Evaluate(ctx, e.Data)
	if err != nil {
		return 0, 0, fmt.Errorf("evaluate %s: %w", model, err)
	}
	return res.Loss, res.Accuracy, nil
}
