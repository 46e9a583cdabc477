package runtime

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/tetratelabs/wazero/api"
)

// TrainConfig describes local training: Epochs passes over the data in
// mini-batches of BatchSize, plain SGD with learning rate LR. When Mu > 0
// the FedProx term Mu/2*||w - Global||^2 is added, so Global must hold the
// round's global weights. Seed fixes the sample order.
type TrainConfig struct {
	Epochs    int
	BatchSize int
	LR        float32
	Mu        float32
	Global    []float32
	Seed      uint64
}

// EpochStats summarises one epoch: mean training loss and accuracy of the
// mini-batches as they were trained.
type EpochStats struct {
	Loss     float64
	Accuracy float64
}

// TrainStats summarises a TrainEpochs call.
type TrainStats struct {
	Steps   int
	Samples int
	Epochs  []EpochStats
}

// EvalResult is the mean loss and accuracy over N samples.
type EvalResult struct {
	Loss     float64
	Accuracy float64
	N        int
}

// StepResult is the summed loss and the number of correct predictions of
// one mini-batch.
type StepResult struct {
	LossSum float64
	Correct int
}

func (in *Instance) checkSource(src data.Source) error {
	if src.Dim() != in.meta.InputLen() || src.Classes() > in.meta.Classes {
		return fmt.Errorf("%w: data has %d features, %d classes; model %q takes %d features, %d classes", ErrShape,
			src.Dim(), src.Classes(), in.meta.Name, in.meta.InputLen(), in.meta.Classes)
	}
	return nil
}

// TrainEpochs trains on src as cfg describes. It is deterministic for a
// given seed, initial parameters and data. The parameters are checked for
// NaN and Inf at the end; a non-finite loss stops training at once.
func (in *Instance) TrainEpochs(ctx context.Context, src data.Source, cfg TrainConfig) (TrainStats, error) {
	step := func(ctx context.Context, src data.Source, idx []int, lr, mu float32) (StepResult, error) {
		return in.step(ctx, &in.bufs, src, idx, lr, mu)
	}
	return trainEpochs(ctx, in, src, cfg, in.SetGlobal, step)
}

// trainEpochs is the epoch loop of Instance.TrainEpochs and
// Group.TrainEpochs: in checks shapes and parameters, setGlobal stores the
// FedProx weights, step trains one batch.
func trainEpochs(ctx context.Context, in *Instance, src data.Source, cfg TrainConfig,
	setGlobal func(context.Context, []float32) error,
	step func(context.Context, data.Source, []int, float32, float32) (StepResult, error)) (TrainStats, error) {
	var st TrainStats
	if err := in.checkSource(src); err != nil {
		return st, err
	}
	if cfg.Epochs < 1 || cfg.BatchSize < 1 || cfg.BatchSize > in.meta.MaxBatch {
		return st, fmt.Errorf("train: %w: epochs %d, batch %d (max %d)", ErrShape, cfg.Epochs, cfg.BatchSize, in.meta.MaxBatch)
	}
	if !(cfg.LR > 0) || math.IsInf(float64(cfg.LR), 0) || !(cfg.Mu >= 0) || math.IsInf(float64(cfg.Mu), 0) {
		return st, fmt.Errorf("train: %w: lr %v, mu %v", ErrShape, cfg.LR, cfg.Mu)
	}
	if cfg.Mu > 0 {
		if err := setGlobal(ctx, cfg.Global); err != nil {
			return st, fmt.Errorf("train: fedprox global weights: %w", err)
		}
	}
	n := src.Len()
	if n == 0 {
		return st, fmt.Errorf("train: %w: empty dataset", ErrShape)
	}
	order := make([]int, n)
	for e := 0; e < cfg.Epochs; e++ {
		shuffle(order, cfg.Seed, uint64(e))
		var loss float64
		var correct int
		for lo := 0; lo < n; lo += cfg.BatchSize {
			if err := ctx.Err(); err != nil {
				return st, fmt.Errorf("train: %w", err)
			}
			hi := min(lo+cfg.BatchSize, n)
			r, err := step(ctx, src, order[lo:hi], cfg.LR, cfg.Mu)
			if err != nil {
				return st, fmt.Errorf("train epoch %d step %d: %w", e, st.Steps, err)
			}
			loss += r.LossSum
			correct += r.Correct
			st.Steps++
			st.Samples += hi - lo
		}
		st.Epochs = append(st.Epochs, EpochStats{Loss: loss / float64(n), Accuracy: float64(correct) / float64(n)})
	}
	if err := in.checkParams(ctx); err != nil {
		return st, fmt.Errorf("train: %w", err)
	}
	return st, nil
}

func (in *Instance) checkParams(ctx context.Context) error {
	b, err := in.buffer(ctx, "fedge_params", uint32(in.meta.Params)*4)
	if err != nil {
		return err
	}
	for i := 0; i < in.meta.Params; i++ {
		v := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: parameter %d is %v after training", ErrNonFinite, i, v)
		}
	}
	return nil
}

// shuffle fills order with a permutation of 0..n-1 fixed by (seed, epoch):
// Fisher-Yates driven by splitmix64, identical on every platform.
func shuffle(order []int, seed, epoch uint64) {
	for i := range order {
		order[i] = i
	}
	s := seed ^ (epoch+1)*0xd1b54a32d192ed03
	for i := len(order) - 1; i > 0; i-- {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		j := int(z % uint64(i+1))
		order[i], order[j] = order[j], order[i]
	}
}

// fill writes the samples idx of src into the input and label buffers.
func (in *Instance) fill(ctx context.Context, b *bufs, src data.Source, idx []int) error {
	if err := in.loadBufs(ctx, b); err != nil {
		return err
	}
	dim := in.meta.InputLen()
	for k, i := range idx {
		x, y := src.Sample(i)
		if len(x) != dim || y < 0 || y >= in.meta.Classes {
			return fmt.Errorf("%w: sample %d has %d features and label %d; model takes %d features, %d classes",
				ErrShape, i, len(x), y, dim, in.meta.Classes)
		}
		putF32s(b.inputs[k*dim*4:(k+1)*dim*4], x)
		binary.LittleEndian.PutUint32(b.labels[4*k:], uint32(int32(y)))
	}
	return nil
}

func (in *Instance) step(ctx context.Context, b *bufs, src data.Source, idx []int, lr, mu float32) (StepResult, error) {
	if err := in.fill(ctx, b, src, idx); err != nil {
		return StepResult{}, err
	}
	if err := in.status(ctx, "fedge_train", uint64(len(idx)), api.EncodeF32(lr), api.EncodeF32(mu)); err != nil {
		return StepResult{}, err
	}
	return in.result(ctx, b)
}

func (in *Instance) result(ctx context.Context, b *bufs) (StepResult, error) {
	if err := in.loadBufs(ctx, b); err != nil {
		return StepResult{}, err
	}
	loss := float64(math.Float32frombits(binary.LittleEndian.Uint32(b.result)))
	correct := float64(math.Float32frombits(binary.LittleEndian.Uint32(b.result[4:])))
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return StepResult{}, fmt.Errorf("%w: loss %v", ErrNonFinite, loss)
	}
	return StepResult{LossSum: loss, Correct: int(correct)}, nil
}

// TrainBatch runs one SGD step on the given samples of src (at most
// MaxBatch of them) and returns the batch loss before the step.
func (in *Instance) TrainBatch(ctx context.Context, src data.Source, idx []int, lr, mu float32) (StepResult, error) {
	if err := in.checkBatch(src, idx); err != nil {
		return StepResult{}, err
	}
	b := &in.bufs
	return in.step(ctx, b, src, idx, lr, mu)
}

// SetGlobal stores the round's global weights for the FedProx term used by
// TrainBatch; TrainEpochs sets them itself from its config.
func (in *Instance) SetGlobal(ctx context.Context, g []float32) error {
	return in.setVector(ctx, "fedge_global", g)
}

func (in *Instance) checkBatch(src data.Source, idx []int) error {
	if err := in.checkSource(src); err != nil {
		return err
	}
	if len(idx) < 1 || len(idx) > in.meta.MaxBatch {
		return fmt.Errorf("%w: batch of %d, max %d", ErrShape, len(idx), in.meta.MaxBatch)
	}
	for _, i := range idx {
		if i < 0 || i >= src.Len() {
			return fmt.Errorf("%w: sample %d outside [0,%d)", ErrShape, i, src.Len())
		}
	}
	return nil
}

// Evaluate returns the mean loss and accuracy of the model over src.
func (in *Instance) Evaluate(ctx context.Context, src data.Source) (EvalResult, error) {
	if err := in.checkSource(src); err != nil {
		return EvalResult{}, err
	}
	n := src.Len()
	b := &in.bufs
	var loss float64
	var correct int
	idx := make([]int, 0, in.meta.MaxBatch)
	for lo := 0; lo < n; lo += in.meta.MaxBatch {
		idx = idx[:0]
		for i := lo; i < min(lo+in.meta.MaxBatch, n); i++ {
			idx = append(idx, i)
		}
		if err := in.fill(ctx, b, src, idx); err != nil {
			return EvalResult{}, fmt.Errorf("evaluate: %w", err)
		}
		if err := in.status(ctx, "fedge_evaluate", uint64(len(idx))); err != nil {
			return EvalResult{}, fmt.Errorf("evaluate: %w", err)
		}
		r, err := in.result(ctx, b)
		if err != nil {
			return EvalResult{}, fmt.Errorf("evaluate: %w", err)
		}
		loss += r.LossSum
		correct += r.Correct
	}
	if n == 0 {
		return EvalResult{}, nil
	}
	return EvalResult{Loss: loss / float64(n), Accuracy: float64(correct) / float64(n), N: n}, nil
}

// Predict returns class probabilities, n rows of Metadata().Classes, for
// the n = len(x)/InputLen samples in x.
func (in *Instance) Predict(ctx context.Context, x []float32) ([]float32, error) {
	dim, k, mb := in.meta.InputLen(), in.meta.Classes, in.meta.MaxBatch
	if len(x)%dim != 0 {
		return nil, fmt.Errorf("predict: %w: %d values is not a multiple of %d features", ErrShape, len(x), dim)
	}
	n := len(x) / dim
	out := make([]float32, n*k)
	b := &in.bufs
	for lo := 0; lo < n; lo += mb {
		hi := min(lo+mb, n)
		if err := in.loadBufs(ctx, b); err != nil {
			return nil, fmt.Errorf("predict: %w", err)
		}
		putF32s(b.inputs, x[lo*dim:hi*dim])
		if err := in.status(ctx, "fedge_predict", uint64(hi-lo)); err != nil {
			return nil, fmt.Errorf("predict: %w", err)
		}
		scores, err := in.buffer(ctx, "fedge_scores", uint32((hi-lo)*k*4))
		if err != nil {
			return nil, fmt.Errorf("predict: %w", err)
		}
		getF32s(out[lo*k:hi*k], scores)
	}
	if i := firstNonFinite(out); i >= 0 {
		return nil, fmt.Errorf("predict: %w: score %d", ErrNonFinite, i)
	}
	return out, nil
}
