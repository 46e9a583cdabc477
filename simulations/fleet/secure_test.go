package fleet

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data"
)

const secureYAML = `
name: secure-small
seed: 3
model: logreg
transport: memory
clock: virtual
clients: 20
rounds: 3
test_samples: 2000
deadline: 2m
partition: {kind: iid}
selection: {fraction: 1.0, min_clients: 10, quorum: 0.5}
train: {epochs: 1, batch_size: 10, learning_rate: 0.05}
secure: {enabled: true, threshold: 0.6, degree: 0, clip_range: 1.0}
devices: {dropout: 0.2}
`

// TestSecureFleet runs a small secure scenario (20 devices, 20% of the
// selected ones dropping at some protocol stage each round) and its plain
// FedAvg baseline with the same seed, rounds and dropouts: the secure
// model's accuracy is within half a percentage point of the plain one.
func TestSecureFleet(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	// A tenth of MNIST's training set keeps the two runs fast.
	sets := mnistSets(t)
	const n = 6000
	small, err := data.NewDataset(sets.Train.X[:n*sets.Train.NumFeat], sets.Train.Y[:n], sets.Train.NumFeat, sets.Train.NumClass)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), smallScenario(t, secureYAML), Options{Out: out, MNIST: &MNISTSets{Train: small, Test: sets.Test}, Stall: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stalls != 0 {
		t.Fatalf("the scheduler stalled %d times", res.Stalls)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum SecureSummary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("secure %.4f, plain %.4f, difference %+.4f; dropped %d (plain %d), participants %d (plain %d)",
		sum.FinalAccuracy, sum.BaselineFinalAccuracy, sum.SecureMinusPlain, sum.TotalDropped, sum.Baseline.TotalDropped,
		sum.TotalParticipants, sum.Baseline.TotalParticipants)
	for _, r := range res.Rounds {
		t.Logf("round %+v", r)
	}
	if sum.Rounds != 3 || sum.Baseline == nil || sum.Baseline.Rounds != 3 {
		t.Fatalf("rounds: secure %d, baseline %+v", sum.Rounds, sum.Baseline)
	}
	if sum.FinalAccuracy < 0.5 || sum.BaselineFinalAccuracy < 0.5 {
		t.Fatalf("accuracies %.4f and %.4f: the models did not train", sum.FinalAccuracy, sum.BaselineFinalAccuracy)
	}
	if d := sum.FinalAccuracy - sum.BaselineFinalAccuracy; math.Abs(d) > 0.005 || math.Abs(d-sum.SecureMinusPlain) > 1e-12 {
		t.Fatalf("secure %.4f vs plain %.4f (recorded difference %v)", sum.FinalAccuracy, sum.BaselineFinalAccuracy, sum.SecureMinusPlain)
	}
	if sum.TotalDropped != sum.Baseline.TotalDropped || sum.TotalDropped == 0 {
		t.Fatalf("dropped: secure %d, plain %d; want the same, non-zero", sum.TotalDropped, sum.Baseline.TotalDropped)
	}
	for _, r := range res.Rounds {
		if r.Participants == 0 || r.Participants > r.Selected {
			t.Fatalf("round %+v", r)
		}
	}
}
