package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation/codec"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/clock"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Int8BlockSize is the block length of int8-encoded updates.
const Int8BlockSize = 256

// DefaultInlineLimit is the largest encoded delta sent inside the update
// envelope; larger ones travel as a blob.
const DefaultInlineLimit = 192 << 10

// DecodeWeights converts little-endian float32 bytes to a vector.
func DecodeWeights(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("weights of %d bytes are not float32s", len(b))
	}
	w := make([]float32, len(b)/4)
	for i := range w {
		w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w, nil
}

// EncodeWeights is the inverse of DecodeWeights.
func EncodeWeights(w []float32) []byte {
	b := make([]byte, 0, 4*len(w))
	for _, x := range w {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// checkModule compiles m's module on host and checks that its parameter
// count matches the manifest; it returns the compiled module.
func checkModule(ctx context.Context, host *runtime.Host, m Model, opts runtime.Options) (*runtime.Module, error) {
	mod, err := host.Compile(ctx, m.Wasm)
	if err != nil {
		return nil, err
	}
	md, err := mod.Metadata(ctx, opts)
	if err != nil {
		return nil, err
	}
	if p := md.Params; uint64(p) != m.Manifest.ParamCount {
		return nil, fmt.Errorf("module declares %d parameters, manifest v%d says %d", p, m.Manifest.Version, m.Manifest.ParamCount)
	}
	return mod, nil
}

// limitSamples returns the first max samples of src (all when max is 0).
func limitSamples(src data.Source, max uint32) (data.Source, error) {
	if max == 0 || int(max) >= src.Len() {
		return src, nil
	}
	idx := make([]int, max)
	for i := range idx {
		idx[i] = i
	}
	return data.Subset(src, idx)
}

// taskRunner runs one task on a fresh instance, closed when it returns.
type taskRunner struct {
	host        *runtime.Host
	src         data.Source
	clock       clock.Clock
	deviceID    string
	inlineLimit int
}

// result is what a task produces before sealing.
type result struct {
	typ  fedgepb.PayloadType
	msg  proto.Message
	blob []byte
}

func (r *taskRunner) instance(ctx context.Context, m Model, batch int) (*runtime.Instance, []float32, error) {
	mod, err := r.host.Compile(ctx, m.Wasm)
	if err != nil {
		return nil, nil, err
	}
	in, err := mod.Instantiate(ctx, runtime.Options{MaxBatch: batch})
	if err != nil {
		return nil, nil, err
	}
	global, err := DecodeWeights(m.Weights)
	if err == nil && uint64(in.Metadata().Params) != m.Manifest.ParamCount {
		err = fmt.Errorf("module declares %d parameters, manifest v%d says %d", in.Metadata().Params, m.Manifest.Version, m.Manifest.ParamCount)
	}
	if err == nil {
		err = in.SetParams(ctx, global)
	}
	if err != nil {
		_ = in.Close(ctx)
		return nil, nil, err
	}
	return in, global, nil
}

func (r *taskRunner) run(ctx context.Context, t *fedgepb.RoundTask, m Model) (result, error) {
	if t.Kind == fedgepb.TaskKind_TASK_KIND_EVALUATE {
		return r.evaluate(ctx, t, m)
	}
	return r.train(ctx, t, m)
}

func (r *taskRunner) evaluate(ctx context.Context, t *fedgepb.RoundTask, m Model) (result, error) {
	// The evaluation batch size does not change the result (a mean over
	// samples), so the runtime's default batch is used whatever was asked.
	in, _, err := r.instance(ctx, m, 0)
	if err != nil {
		return result{}, fmt.Errorf("evaluate round %d: %w", t.RoundId, err)
	}
	defer in.Close(ctx)
	src, err := limitSamples(r.src, t.Evaluate.MaxSamples)
	if err != nil {
		return result{}, err
	}
	ev, err := in.Evaluate(ctx, src)
	if err != nil {
		return result{}, fmt.Errorf("evaluate round %d: %w", t.RoundId, err)
	}
	return result{typ: fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT, msg: &fedgepb.EvaluateResult{
		RoundId: t.RoundId, DeviceId: r.deviceID, BaseModelHash: t.BaseModelHash,
		SampleCount: uint64(ev.N), Loss: ev.Loss, Accuracy: ev.Accuracy, Nonce: t.Nonce,
	}}, nil
}

func (r *taskRunner) train(ctx context.Context, t *fedgepb.RoundTask, m Model) (result, error) {
	delta, u, err := r.trainDelta(ctx, t, m)
	if err != nil {
		return result{}, err
	}
	enc, err := encodeDelta(t.Train, t.RoundId, delta)
	if err != nil {
		return result{}, fmt.Errorf("train round %d: %w", t.RoundId, err)
	}
	return r.withDelta(u, enc), nil
}

// trainDelta trains t from m and returns the clipped delta and the update
// to send it in (every field but the delta's).
func (r *taskRunner) trainDelta(ctx context.Context, t *fedgepb.RoundTask, m Model) ([]float32, *fedgepb.Update, error) {
	tc := t.Train
	start := r.clock.Now()
	in, global, err := r.instance(ctx, m, int(tc.BatchSize))
	if err != nil {
		return nil, nil, fmt.Errorf("train round %d: %w", t.RoundId, err)
	}
	defer in.Close(ctx)
	src, err := limitSamples(r.src, tc.MaxSamples)
	if err != nil {
		return nil, nil, err
	}
	st, err := in.TrainEpochs(ctx, src, runtime.TrainConfig{
		Epochs: int(tc.Epochs), BatchSize: int(tc.BatchSize), LR: tc.LearningRate,
		Mu: tc.ProximalMu, Global: global, Seed: shuffleSeed(tc.Seed, t.RoundId),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("train round %d: %w", t.RoundId, err)
	}
	local, err := in.Params(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("train round %d: %w", t.RoundId, err)
	}
	delta := make([]float32, len(local))
	for i := range local {
		delta[i] = local[i] - global[i]
	}
	ClipL2(delta, float64(tc.ClipNorm))
	u := &fedgepb.Update{
		RoundId: t.RoundId, DeviceId: r.deviceID, BaseModelHash: t.BaseModelHash,
		SampleCount: uint64(st.Samples / max(len(st.Epochs), 1)), Codec: tc.Codec, Nonce: t.Nonce,
		Metrics: &fedgepb.TrainMetrics{Steps: uint64(st.Steps), TrainMillis: uint64(max(r.clock.Now().Sub(start), 0) / time.Millisecond)},
	}
	if n := len(st.Epochs); n > 0 {
		u.Metrics.Loss, u.Metrics.Accuracy = st.Epochs[n-1].Loss, st.Epochs[n-1].Accuracy
	}
	return delta, u, nil
}

// withDelta puts the encoded delta into u, inline or as a blob.
func (r *taskRunner) withDelta(u *fedgepb.Update, enc []byte) result {
	u.DeltaLength = uint64(len(enc))
	res := result{typ: fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE, msg: u}
	if len(enc) > r.inlineLimit {
		id := sha256.Sum256(enc)
		u.DeltaBlobId, res.blob = id[:], enc
	} else {
		u.EncodedDelta = enc
	}
	return res
}

// ClipL2 scales v in place so that its L2 norm is at most c (c <= 0: no
// clipping).
func ClipL2(v []float32, c float64) {
	if c <= 0 {
		return
	}
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	n := math.Sqrt(s)
	if n <= c {
		return
	}
	f := float32(c / n)
	for i := range v {
		v[i] *= f
	}
}

// encodeDelta encodes delta with the task's codec. Stochastic codecs are
// seeded from the task (seed, round) so a task always yields the same bytes.
func encodeDelta(tc *fedgepb.TrainConfig, round uint64, delta []float32) ([]byte, error) {
	var spec codec.Spec
	switch tc.Codec {
	case fedgepb.Codec_CODEC_FLOAT32:
		spec.ID = codec.Float32
	case fedgepb.Codec_CODEC_FLOAT16:
		spec.ID = codec.Float16
	case fedgepb.Codec_CODEC_INT8:
		spec = codec.Spec{ID: codec.Int8, BlockSize: Int8BlockSize}
	case fedgepb.Codec_CODEC_TOPK:
		// The tolerance absorbs float32 representation error (0.1f * 1000 = 100.0000015).
		k := int(math.Ceil(float64(tc.TopkFraction)*float64(len(delta)) - 1e-4))
		spec = codec.Spec{ID: codec.TopK, K: min(max(k, 1), max(len(delta), 1))}
	default:
		return nil, fmt.Errorf("codec %v not supported", tc.Codec)
	}
	enc, err := codec.NewEncoder(spec, rand.New(rand.NewPCG(tc.Seed, round)))
	if err != nil {
		return nil, err
	}
	out, err := enc.Encode(make([]byte, 0, enc.EncodedSize(len(delta))), delta)
	if err != nil {
		return nil, fmt.Errorf("encode delta: %w", err)
	}
	return out, nil
}

// runtimeOptions are the instance options used to inspect a module.
func runtimeOptions() runtime.Options { return runtime.Options{MaxBatch: 1} }

// shuffleSeed is the seed of a round's local shuffles. The task carries the
// run's seed, the same every round; mixing in the round gives every round
// fresh mini-batch orders (as SGD expects) while a run stays reproducible.
func shuffleSeed(runSeed, round uint64) uint64 {
	return rand.New(rand.NewPCG(runSeed^0x73687566666c6531, round)).Uint64() // "shuffle1"
}
