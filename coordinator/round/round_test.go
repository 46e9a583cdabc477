package round

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

func TestSelectCount(t *testing.T) {
	cases := []struct {
		fraction       float64
		min, max       uint32
		eligible, want int
	}{
		{1, 1, 0, 0, 0},
		{0.5, 2, 0, 1, 0},    // fewer than min eligible: wait
		{0.5, 2, 0, 2, 2},    // fraction rounds to 1, min lifts it
		{0.5, 1, 0, 5, 3},    // ceil(2.5)
		{0.1, 1, 0, 100, 10}, // exact
		{0.1, 1, 0, 101, 11}, // ceil(10.1)
		{1, 1, 4, 10, 4},     // max caps
		{0.01, 3, 0, 10, 3},  // min lifts
		{1, 2, 0, 7, 7},
	}
	for _, c := range cases {
		cfg := &fedgepb.RunConfig{Fraction: c.fraction, MinClients: c.min, MaxClients: c.max}
		if got := selectCount(cfg, c.eligible); got != c.want {
			t.Errorf("fraction %v min %d max %d of %d: got %d, want %d", c.fraction, c.min, c.max, c.eligible, got, c.want)
		}
	}
}

// TestChooseProperties: selection ignores candidate order, is reproducible
// from the seed, varies between rounds, and picks every device about
// equally often.
func TestChooseProperties(t *testing.T) {
	var devs []string
	for i := range 10 {
		devs = append(devs, fmt.Sprintf("dev-%02d", i))
	}
	rev := slices.Clone(devs)
	slices.Reverse(rev)
	counts := map[string]int{}
	const rounds, k = 3000, 3
	distinct := map[string]bool{}
	for r := uint64(1); r <= rounds; r++ {
		a, b := choose(devs, k, 42, r), choose(rev, k, 42, r)
		if !slices.Equal(a, b) {
			t.Fatalf("round %d: selection depends on candidate order: %v vs %v", r, a, b)
		}
		if len(a) != k || !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != k {
			t.Fatalf("round %d: selection %v is not %d distinct sorted ids", r, a, k)
		}
		distinct[fmt.Sprint(a)] = true
		for _, d := range a {
			counts[d]++
		}
	}
	if len(distinct) < 100 {
		t.Errorf("only %d distinct selections in %d rounds", len(distinct), rounds)
	}
	want := float64(rounds*k) / float64(len(devs))
	for d, n := range counts {
		if math.Abs(float64(n)-want) > 0.1*want {
			t.Errorf("%s selected %d times, want about %.0f", d, n, want)
		}
	}
	if slices.Equal(choose(devs, k, 1, 1), choose(devs, k, 2, 1)) && slices.Equal(choose(devs, k, 1, 2), choose(devs, k, 2, 2)) {
		t.Error("selection ignores the seed")
	}
}

// TestRequiredFeatures: a run that requires a feature selects only the
// devices reporting it, and waits while too few do.
func TestRequiredFeatures(t *testing.T) {
	h := newHarness(t)
	withFeature := func(id string) DeviceOnline {
		ev := online(id, "eu")
		ev.Caps.Features = []string{"other", fedgepb.FeatureSecAgg}
		return ev
	}
	h.mustStep(withFeature("dev-a"))
	h.mustStep(online("dev-b", "eu"))
	cfg := runConfig()
	cfg.Fraction, cfg.RequiredFeatures = 1, []string{fedgepb.FeatureSecAgg}
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	if st := h.m.Status(); st.Phase != fedgepb.RoundPhase_ROUND_PHASE_WAITING {
		t.Fatalf("round %v with one eligible device of min 2, want waiting", st.Phase)
	}
	h.mustStep(withFeature("dev-c"))
	if sel := h.selected(1); !slices.Equal(sel, []string{"dev-a", "dev-c"}) {
		t.Fatalf("selected %v, want the devices with the feature", sel)
	}
}

func TestValidateRunConfig(t *testing.T) {
	good := func() *fedgepb.RunConfig { return runConfig() }
	cases := []struct {
		name   string
		mutate func(c *fedgepb.RunConfig)
		ok     bool
	}{
		{"good", func(c *fedgepb.RunConfig) {}, true},
		{"no model", func(c *fedgepb.RunConfig) { c.ModelId = "" }, false},
		{"fraction 0", func(c *fedgepb.RunConfig) { c.Fraction = 0 }, false},
		{"fraction above 1", func(c *fedgepb.RunConfig) { c.Fraction = 1.5 }, false},
		{"fraction NaN", func(c *fedgepb.RunConfig) { c.Fraction = math.NaN() }, false},
		{"min 0", func(c *fedgepb.RunConfig) { c.MinClients = 0 }, false},
		{"max below min", func(c *fedgepb.RunConfig) { c.MaxClients = 1 }, false},
		{"quorum above max", func(c *fedgepb.RunConfig) { c.MaxClients, c.Quorum = 3, 4 }, false},
		{"no timeout", func(c *fedgepb.RunConfig) { c.RoundTimeoutMs = 0 }, false},
		{"eval without timeout", func(c *fedgepb.RunConfig) { c.FederatedEvaluation = true }, false},
		{"no end", func(c *fedgepb.RunConfig) { c.Rounds = 0 }, false},
		{"target without eval", func(c *fedgepb.RunConfig) { c.Rounds, c.TargetAccuracy = 0, 0.9 }, false},
		{"target with eval", func(c *fedgepb.RunConfig) {
			c.Rounds, c.TargetAccuracy, c.ServerEvaluation, c.EvalTimeoutMs = 0, 0.9, true, 1
		}, true},
		{"required feature", func(c *fedgepb.RunConfig) { c.RequiredFeatures = []string{"secagg"} }, true},
		{"empty required feature", func(c *fedgepb.RunConfig) { c.RequiredFeatures = []string{""} }, false},
	}
	for _, c := range cases {
		cfg := good()
		c.mutate(cfg)
		err := ValidateRunConfig(cfg)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v does not wrap ErrInvalidConfig", c.name, err)
		}
	}
}

func TestStepErrors(t *testing.T) {
	h := newHarness(t)
	h.mustStep(Tick{NowUnixMs: 100})
	h.mustStep(StartRun{RunID: 1, Config: runConfig(), Base: initialModel()})
	otherModel := initialModel()
	otherModel.ModelId = "cnn"
	nanModel := initialModel()
	nanModel.Weights = EncodeWeights([]float32{float32(math.NaN())})
	unknownVersion := initialModel()
	unknownVersion.Version = 9
	cases := []struct {
		name string
		ev   Event
		want error
	}{
		{"nil", nil, ErrInvalidEvent},
		{"second run", StartRun{RunID: 2, Config: runConfig(), Base: initialModel()}, ErrRunActive},
		{"nil update", UpdateReceived{}, ErrInvalidEvent},
		{"refusal without reason", UpdateRefused{Device: "dev-a"}, ErrInvalidEvent},
		{"nil eval", EvalResultReceived{}, ErrInvalidEvent},
		{"NaN server eval", EvalComputed{RoundID: 1, Loss: math.NaN()}, ErrInvalidEvent},
		{"online without id", DeviceOnline{}, ErrInvalidEvent},
		{"online with a topic separator", DeviceOnline{Device: "a/b"}, ErrInvalidEvent},
		{"update from an invalid id", UpdateReceived{Update: &fedgepb.Update{DeviceId: "+"}}, ErrInvalidEvent},
		{"eval from an invalid id", EvalResultReceived{Result: &fedgepb.EvaluateResult{DeviceId: ".."}}, ErrInvalidEvent},
	}
	fresh := newHarness(t)
	startCases := []struct {
		name string
		ev   StartRun
		want error
	}{
		{"run id 0", StartRun{Config: runConfig(), Base: initialModel()}, ErrInvalidEvent},
		{"bad config", StartRun{RunID: 1, Config: &fedgepb.RunConfig{ModelId: "mlp"}, Base: initialModel()}, ErrInvalidConfig},
		{"base of another model", StartRun{RunID: 1, Config: runConfig(), Base: otherModel}, ErrInvalidEvent},
		{"NaN base", StartRun{RunID: 1, Config: runConfig(), Base: nanModel}, ErrInvalidEvent},
		{"unknown base version", StartRun{RunID: 1, Config: runConfig(), Base: unknownVersion}, ErrInvalidEvent},
		{"no base", StartRun{RunID: 1, Config: runConfig()}, ErrInvalidEvent},
	}
	for _, c := range cases {
		if err := h.m.Step(c.ev); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	for _, c := range startCases {
		if err := fresh.m.Step(c.ev); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if fresh.m.HasReady() {
			t.Errorf("%s: a refused event produced a Ready", c.name)
		}
	}
	if err := h.m.Step(Tick{NowUnixMs: 99}); err != nil || h.m.Status().NowUnixMs != 100 {
		t.Errorf("tick backwards: err %v, clock %d (want 100)", err, h.m.Status().NowUnixMs)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New without an aggregator succeeded")
	}
}

// TestStop aborts a run mid-training: the round is aborted, its updates
// dropped, the run stopped and announced closed; a later update is late.
func TestStop(t *testing.T) {
	h := newHarness(t)
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction = 1
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	sel := h.selected(1)
	h.mustStep(h.train(sel[0]))
	pending := h.train(sel[1])
	h.mustStep(Stop{Reason: "admin"})
	ctx := context.Background()
	r, _ := h.st.Round(ctx, 1)
	run, _ := h.st.Run(ctx, 1)
	ups, _ := h.st.Updates(ctx, 1)
	if r.GetPhase() != fedgepb.RoundPhase_ROUND_PHASE_ABORTED || run.GetState() != fedgepb.RunState_RUN_STATE_STOPPED || len(ups) != 0 {
		t.Fatalf("after Stop: round %v, run %v, %d updates in flight", r.GetPhase(), run.GetState(), len(ups))
	}
	h.mustStep(pending)
	if h.counter(ReasonLate) != 1 {
		t.Errorf("update for the aborted round: counters %v", h.m.Counters())
	}
	if h.m.Status().RunID != 0 {
		t.Errorf("status after stop: %+v", h.m.Status())
	}
	// A new run may start and continues the sequences.
	h.mustStep(StartRun{RunID: 2, Config: cfg, Base: initialModel()})
	if st := h.m.Status(); st.RunID != 2 || st.RoundID != 2 || st.ModelVersion != 2 || st.Selected != 5 {
		t.Errorf("second run status: %+v", st)
	}
}

// TestTargetAccuracy ends a run without a round count once the server-side
// evaluation reaches the target.
func TestTargetAccuracy(t *testing.T) {
	h := newHarness(t)
	fiveDevices(h)
	cfg := runConfig()
	cfg.Fraction, cfg.Rounds, cfg.TargetAccuracy = 1, 0, 0.9
	cfg.ServerEvaluation, cfg.EvalTimeoutMs = true, 5_000
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: initialModel()})
	for round, acc := range []float64{0.5, 0.8, 0.93} {
		id := uint64(round + 1)
		for _, d := range h.selected(id) {
			h.mustStep(h.train(d))
		}
		h.mustStep(EvalComputed{RoundID: id, Loss: 1 - acc, Accuracy: acc})
	}
	run, _ := h.st.Run(context.Background(), 1)
	if run.GetState() != fedgepb.RunState_RUN_STATE_DONE || run.RoundsCommitted != 3 || run.LastAccuracy != 0.93 {
		t.Fatalf("run: %v", run)
	}
}

// TestManifest checks the manifest of a committed version: bound to its
// weights, version and round, and signed.
func TestManifest(t *testing.T) {
	h := newHarness(t)
	scenarioNormal(h)
	v, err := h.st.ModelVersion(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var man fedgepb.ModelManifest
	if err := proto.Unmarshal(v.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	if man.Version != 2 || man.RoundId != 1 || man.ModelId != "mlp" || man.ParamCount != testDim ||
		man.WeightsLength != 4*testDim || !bytes.Equal(man.WeightsHash, v.WeightsHash) {
		t.Errorf("manifest %v does not describe version %d", &man, v.Version)
	}
	sig := man.Signature
	man.Signature = nil
	if err := (hashSigner{}).SignManifest(&man); err != nil || !bytes.Equal(sig, man.Signature) {
		t.Errorf("manifest signature %x does not verify", sig)
	}
}

// TestDeterministic runs the same script twice: identical transcripts.
func TestDeterministic(t *testing.T) {
	a, b := newHarness(t), newHarness(t)
	for _, h := range []*harness{a, b} {
		for _, step := range restartScript() {
			step(h)
		}
	}
	if a.out.String() != b.out.String() {
		t.Fatal("the same events produced different Ready batches")
	}
}

func TestNewRejectsInconsistentSnapshots(t *testing.T) {
	h := newHarness(t)
	fiveDevices(h)
	h.mustStep(StartRun{RunID: 1, Config: runConfig(), Base: initialModel()})
	h.mustStep(h.train(h.selected(1)[0]))
	good, err := LoadSnapshot(context.Background(), h.st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(testConfig(), good); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	clone := func() *Snapshot {
		s := *good
		s.Run = proto.Clone(good.Run).(*store.Run)
		s.Round = proto.Clone(good.Round).(*store.Round)
		s.Model = proto.Clone(good.Model).(*store.ModelVersion)
		s.Updates = []*store.Update{proto.Clone(good.Updates[0]).(*store.Update)}
		return &s
	}
	cases := []struct {
		name   string
		mutate func(s *Snapshot)
	}{
		{"no round", func(s *Snapshot) { s.Round = nil }},
		{"round of another run", func(s *Snapshot) { s.Round.RunId = 9 }},
		{"no model", func(s *Snapshot) { s.Model = nil }},
		{"model weights cut", func(s *Snapshot) { s.Model.Weights = s.Model.Weights[:3] }},
		{"round beyond the sequence", func(s *Snapshot) { s.LastRoundID = 0 }},
		{"update out of order", func(s *Snapshot) { s.Updates[0].Arrival = 3 }},
		{"update of unselected device", func(s *Snapshot) { s.Updates[0].DeviceId = "dev-z" }},
		{"update of the wrong shape", func(s *Snapshot) { s.Updates[0].EncodedDelta = []byte{1, 2, 3, 4} }},
		{"run not running", func(s *Snapshot) { s.Run.State = fedgepb.RunState_RUN_STATE_DONE }},
		{"round finished", func(s *Snapshot) { s.Round.Phase = fedgepb.RoundPhase_ROUND_PHASE_DONE }},
	}
	for _, c := range cases {
		s := clone()
		c.mutate(s)
		if _, err := New(testConfig(), s); err == nil {
			t.Errorf("%s: New accepted the snapshot", c.name)
		}
	}
}

func TestFormatProto(t *testing.T) {
	m := &fedgepb.Capabilities{Arch: "arm64", Tags: map[string]string{"z": "1", "a": "2"}, AbiVersions: []uint32{1, 2}}
	const want = `{arch="arm64" tags=[a:"2" z:"1"] abi_versions=[1 2]}`
	for range 5 {
		if got := FormatProto(m); got != want {
			t.Fatalf("FormatProto = %s, want %s", got, want)
		}
	}
	if got := FormatProto(&fedgepb.RoundAnnouncement{}); got != "{}" {
		t.Errorf("empty message: %s", got)
	}
	sum := sha256.Sum256(make([]byte, 17))
	if got, want := formatBytes(make([]byte, 17)), fmt.Sprintf("<17B sha256:%x>", sum[:4]); got != want {
		t.Errorf("long bytes: %s, want %s", got, want)
	}
	if got := formatBytes([]byte{0xab, 1}); got != "0xab01" {
		t.Errorf("short bytes: %s", got)
	}
}

// weightsTable holds good and bad little-endian float32 encodings for the
// decoder test and the fuzz seeds.
var weightsTable = []struct {
	b   []byte
	dim int
	ok  bool
}{
	{nil, 0, true},
	{EncodeWeights([]float32{1, -2.5, 0}), 3, true},
	{EncodeWeights([]float32{1, -2.5, 0}), 0, true},
	{EncodeWeights([]float32{1, -2.5, 0}), 2, false},
	{[]byte{1, 2, 3}, 0, false},
	{[]byte{0, 0, 0xc0, 0x7f}, 1, true}, // NaN decodes; finiteness is checked separately
}

func TestDecodeWeights(t *testing.T) {
	for i, c := range weightsTable {
		w, err := DecodeWeights(c.b, c.dim)
		if (err == nil) != c.ok {
			t.Errorf("row %d: err %v, want ok=%v", i, err, c.ok)
		}
		if err == nil && !bytes.Equal(EncodeWeights(w), c.b) && len(c.b) > 0 {
			t.Errorf("row %d: does not round trip", i)
		}
	}
}

func FuzzDecodeWeights(f *testing.F) {
	for _, c := range weightsTable {
		f.Add(c.b, c.dim)
	}
	f.Fuzz(func(t *testing.T, b []byte, dim int) {
		w, err := DecodeWeights(b, dim)
		if err != nil {
			return
		}
		if dim > 0 && len(w) != dim {
			t.Fatalf("decoded %d values, asked for %d", len(w), dim)
		}
		if !bytes.Equal(EncodeWeights(w), b) && len(b) > 0 {
			t.Fatalf("%x does not round trip", b)
		}
	})
}

// TestReadyHandOver: a Ready is handed out once; output of Steps before its
// Advance waits for the next Ready.
func TestReadyHandOver(t *testing.T) {
	m, err := New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.HasReady() {
		t.Fatal("fresh machine has a Ready")
	}
	for _, id := range []string{"dev-a", "dev-b"} {
		if err := m.Step(online(id, "eu")); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Step(StartRun{RunID: 1, Config: runConfig(), Base: initialModel()}); err != nil {
		t.Fatal(err)
	}
	first := m.Ready()
	if len(first.Batch.Runs) != 1 || len(first.Messages) == 0 {
		t.Fatalf("first Ready: %s", first)
	}
	if err := m.Step(Stop{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if rd := m.Ready(); m.HasReady() || !rd.empty() {
		t.Fatal("a second Ready was handed out before Advance")
	}
	if len(first.Batch.Runs) != 1 || first.Batch.Runs[0].State != fedgepb.RunState_RUN_STATE_RUNNING {
		t.Fatalf("the handed-out Ready changed: %s", first)
	}
	m.Advance()
	second := m.Ready()
	if len(second.Ended) != 1 || second.Batch.Runs[0].State != fedgepb.RunState_RUN_STATE_STOPPED {
		t.Fatalf("second Ready: %s", second)
	}
}

// TestManifestKeepsModule: a new version's manifest keeps the WASM module
// fields of the base model's manifest.
func TestManifestKeepsModule(t *testing.T) {
	h := newHarness(t)
	fiveDevices(h)
	base := initialModel()
	wasm := sha256.Sum256([]byte("module"))
	man, err := proto.Marshal(&fedgepb.ModelManifest{ModelId: "mlp", WasmHash: wasm[:], WasmLength: 2400})
	if err != nil {
		t.Fatal(err)
	}
	base.Manifest = man
	cfg := runConfig()
	cfg.Fraction, cfg.MaxClients = 1, 2
	h.mustStep(StartRun{RunID: 1, Config: cfg, Base: base})
	for _, d := range h.selected(1) {
		h.mustStep(h.train(d))
	}
	for v := uint64(1); v <= 2; v++ {
		mv, err := h.st.ModelVersion(context.Background(), v)
		if err != nil {
			t.Fatal(err)
		}
		var got fedgepb.ModelManifest
		if err := proto.Unmarshal(mv.Manifest, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.WasmHash, wasm[:]) || got.WasmLength != 2400 || got.Version != v || len(got.Signature) == 0 {
			t.Errorf("manifest of version %d: %v", v, &got)
		}
	}
}
