package scenario

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/simulations/scenarios"
)

func TestShippedScenariosValidate(t *testing.T) {
	want := []string{"attackers", "dirichlet-0.1", "dp-fedavg", "mcmahan-2nn-iid", "mcmahan-2nn-noniid", "mcmahan-cnn-iid", "quickstart", "scale-10k", "secure-100"}
	names := scenarios.Names()
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("shipped scenarios %v, want %v", names, want)
	}
	for _, n := range names {
		data, _ := scenarios.Read(n)
		s, err := Parse(data)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if s.Name != n {
			t.Errorf("%s.yaml has name %q", n, s.Name)
		}
	}
}

func TestPaperSettings(t *testing.T) {
	data, _ := scenarios.Read("mcmahan-2nn-iid")
	s, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if s.Clients != 100 || s.Selection.Fraction != 0.1 || s.Train.Epochs != 1 || s.Train.BatchSize != 10 || s.TargetAccuracy != 0.97 {
		t.Fatalf("mcmahan-2nn-iid does not match the paper's setting: %+v", s)
	}
}

func TestDefaultsAndDurations(t *testing.T) {
	s, err := Parse([]byte("name: x\ndeadline: 90s\ndevices: {latency: 150ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Deadline != 90*time.Second || s.Devices.Latency != 150*time.Millisecond || s.Model != "mlp" || s.Clients != 10 {
		t.Fatalf("got %+v", s)
	}
}

func TestReconnectStorm(t *testing.T) {
	s, err := Parse([]byte("name: x\ntransport: broker\nrounds: 3\nreconnect_storm: {round: 2, fraction: 0.5, within: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReconnectStorm{Round: 2, Fraction: 0.5, Within: time.Second}); s.ReconnectStorm != want {
		t.Fatalf("reconnect_storm %+v, want %+v", s.ReconnectStorm, want)
	}
}

func TestBadScenarios(t *testing.T) {
	cases := map[string]struct{ yaml, field string }{
		"unknown key":        {"name: x\nclientz: 3\n", "clientz"},
		"empty":              {"", "empty file"},
		"not yaml":           {"name: [x\n", "invalid scenario"},
		"no name":            {"clients: 3\n", "name"},
		"bad model":          {"name: x\nmodel: resnet\n", "model"},
		"bad dataset":        {"name: x\ndataset: cifar\n", "dataset"},
		"zero clients":       {"name: x\nclients: 0\n", "clients"},
		"bad fraction":       {"name: x\nselection: {fraction: 1.5}\n", "selection.fraction"},
		"min over clients":   {"name: x\nclients: 5\nselection: {min_clients: 6}\n", "selection.min_clients"},
		"negative lr":        {"name: x\ntrain: {learning_rate: -1}\n", "train.learning_rate"},
		"bad partition":      {"name: x\npartition: {kind: zipf}\n", "partition.kind"},
		"dirichlet no alpha": {"name: x\npartition: {kind: dirichlet, alpha: 0}\n", "partition.alpha"},
		"secure robust":      {"name: x\nstrategy: {name: median}\nsecure: {enabled: true}\n", "secure.enabled"},
		"bad attack":         {"name: x\nattackers: {fraction: 0.1, kind: bribe}\n", "attackers.kind"},
		"bad duration":       {"name: x\ndeadline: soon\n", "invalid scenario"},
		"dropout over one":   {"name: x\ndevices: {dropout: 2}\n", "devices.dropout"},
		"dp without clip":    {"name: x\nstrategy: {name: fedavg, dp_noise_multiplier: 1}\n", "strategy.dp_clip"},
		"storm on memory":    {"name: x\nreconnect_storm: {round: 1, fraction: 1}\n", "needs transport broker"},
		"storm past the end": {"name: x\ntransport: broker\nrounds: 2\nreconnect_storm: {round: 3, fraction: 1}\n", "reconnect_storm.round"},
		"storm no round":     {"name: x\ntransport: broker\nreconnect_storm: {fraction: 1}\n", "reconnect_storm.round"},
		"storm no fraction":  {"name: x\ntransport: broker\nreconnect_storm: {round: 1}\n", "reconnect_storm.fraction"},
		"storm too long":     {"name: x\ntransport: broker\nreconnect_storm: {round: 1, fraction: 1, within: 1h}\n", "reconnect_storm.within"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.yaml))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %q does not name %q", name, err, c.field)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("name: x\n"+strings.Repeat("#", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range scenarios.Names() {
		data, _ := scenarios.Read(n)
		f.Add(data)
	}
	f.Add([]byte("name: x\nclients: -1\n"))
	f.Add([]byte("{{{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err == nil {
			if verr := s.Validate(); verr != nil {
				t.Fatalf("Parse accepted a scenario that does not validate: %v", verr)
			}
		}
	})
}
