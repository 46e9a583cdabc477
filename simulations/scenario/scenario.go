// Package scenario defines fleetsim's scenario files: what fleet to
// simulate, how its data is split, how devices behave and misbehave, and how
// the coordinator trains. Files are YAML; unknown keys, missing values and
// impossible combinations are errors that name the offending field.
package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid scenario")

// MaxFileSize bounds a scenario file.
const MaxFileSize = 1 << 20

// Scenario is one simulated experiment.
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Seed        uint64 `yaml:"seed"`
	// Model is a built-in model name (logreg, mlp, cnn) or a path to a
	// .wasm module implementing wasm-models/ABI.md.
	Model string `yaml:"model"`
	// Dataset is "mnist" (shipped with the GoMNIST module) or "csv:PATH".
	Dataset string `yaml:"dataset"`
	// TestSamples limits the server-side test set (0 = all).
	TestSamples int `yaml:"test_samples"`
	// Transport is "broker" (the embedded MQTT broker, reached through its
	// in-process listener: real MQTT sessions, no sockets) or
	// "memory" (the in-memory transport).
	Transport string `yaml:"transport"`
	// Clock is "virtual" (fleet time runs as fast as the machine allows)
	// or "wall".
	Clock          string        `yaml:"clock"`
	Clients        int           `yaml:"clients"`
	Rounds         int           `yaml:"rounds"`
	TargetAccuracy float64       `yaml:"target_accuracy"`
	StopAtTarget   bool          `yaml:"stop_at_target"`
	Deadline       time.Duration `yaml:"deadline"`
	Partition      Partition     `yaml:"partition"`
	Selection      Selection     `yaml:"selection"`
	Train          Train         `yaml:"train"`
	Strategy       Strategy      `yaml:"strategy"`
	Codec          string        `yaml:"codec"`
	Secure         Secure        `yaml:"secure"`
	Devices        Devices       `yaml:"devices"`
	Attackers      Attackers     `yaml:"attackers"`
	// ReconnectStorm makes devices lose their broker connection in the
	// middle of a round (transport broker only).
	ReconnectStorm ReconnectStorm `yaml:"reconnect_storm"`
}

// Partition says how the training set is split among clients.
type Partition struct {
	Kind            string  `yaml:"kind"` // iid | dirichlet | shards | quantity
	Alpha           float64 `yaml:"alpha"`
	ShardsPerClient int     `yaml:"shards_per_client"`
	MinPerClient    int     `yaml:"min_per_client"`
}

// Selection is the coordinator's client selection per round.
type Selection struct {
	Fraction   float64 `yaml:"fraction"`
	MinClients int     `yaml:"min_clients"`
	MaxClients int     `yaml:"max_clients"`
	// Quorum is the fraction of selected clients whose updates close a round
	// before its deadline (1 = wait for all or the deadline).
	Quorum float64 `yaml:"quorum"`
}

// Train is the local training configuration sent in every task.
type Train struct {
	Epochs       int     `yaml:"epochs"`
	BatchSize    int     `yaml:"batch_size"`
	LearningRate float64 `yaml:"learning_rate"`
	ProximalMu   float64 `yaml:"proximal_mu"`
	ClipNorm     float64 `yaml:"clip_norm"`
}

// Strategy is the server-side aggregation.
type Strategy struct {
	Name       string  `yaml:"name"`
	ServerLR   float64 `yaml:"server_lr"`
	Momentum   float64 `yaml:"momentum"`
	Beta1      float64 `yaml:"beta1"`
	Beta2      float64 `yaml:"beta2"`
	Tau        float64 `yaml:"tau"`
	TrimBeta   float64 `yaml:"trim_beta"`
	ByzantineF int     `yaml:"byzantine_f"`
	MultiKrumM int     `yaml:"multikrum_m"`
	NormBound  float64 `yaml:"norm_bound"`
	DPNoise    float64 `yaml:"dp_noise_multiplier"`
	DPClip     float64 `yaml:"dp_clip"`
	DPDelta    float64 `yaml:"dp_delta"`
}

// Secure turns on secure aggregation.
type Secure struct {
	Enabled   bool    `yaml:"enabled"`
	Threshold float64 `yaml:"threshold"` // fraction of the cohort
	Degree    int     `yaml:"degree"`    // neighbours per client (0 = complete graph)
	ClipRange float64 `yaml:"clip_range"`
}

// Devices describes device heterogeneity.
type Devices struct {
	// Speed is the local training throughput in samples per second of
	// virtual time, drawn per device from a log-normal around Median.
	SpeedMedian float64 `yaml:"speed_median"`
	SpeedSigma  float64 `yaml:"speed_sigma"`
	// Availability is the probability a device is reachable when a round
	// is selected; Diurnal swings it by this amplitude over a 24 h period.
	Availability float64 `yaml:"availability"`
	Diurnal      float64 `yaml:"diurnal"`
	// Dropout is the probability a selected device vanishes mid-round.
	Dropout float64 `yaml:"dropout"`
	// BandwidthBps is the up and down link speed in bytes per second of
	// virtual time (0 = unlimited); Latency is added to every message.
	BandwidthBps float64       `yaml:"bandwidth_bps"`
	Latency      time.Duration `yaml:"latency"`
}

// Attackers makes a fraction of devices malicious.
type Attackers struct {
	Fraction float64 `yaml:"fraction"`
	Kind     string  `yaml:"kind"` // label_flip | sign_flip | scale | noise
	Scale    float64 `yaml:"scale"`
}

// ReconnectStorm is a network outage of part of the fleet: in the middle
// of one round (once the coordinator has published that round's last
// task) each chosen device's connection to the broker is cut without a
// DISCONNECT, as a lost link would be, so the broker publishes the
// device's will; the device's MQTT client reconnects by itself and its
// agent says hello again and re-publishes what was not acknowledged. The
// devices and the moment each one drops are drawn from the seed.
type ReconnectStorm struct {
	// Round is the round (1 = the first) the storm hits; 0: no storm.
	Round int `yaml:"round"`
	// Fraction is the share of the devices that drop, in (0, 1].
	Fraction float64 `yaml:"fraction"`
	// Within spreads the drops over this much wall time (0: all at once,
	// at most 10m). Wall time under either clock: the MQTT clients
	// reconnect on the wall clock.
	Within time.Duration `yaml:"within"`
}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("scenario %s: %w: file larger than %d bytes", path, ErrInvalid, MaxFileSize)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a scenario, fills defaults and validates it.
func Parse(data []byte) (*Scenario, error) {
	s := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty file", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Default is the scenario every file starts from.
func Default() *Scenario {
	return &Scenario{
		Seed:           1,
		Model:          "mlp",
		Dataset:        "mnist",
		Transport:      "memory",
		Clock:          "virtual",
		Clients:        10,
		Rounds:         10,
		TargetAccuracy: 0.97,
		Deadline:       10 * time.Minute,
		Partition:      Partition{Kind: "iid", ShardsPerClient: 2, Alpha: 0.5},
		Selection:      Selection{Fraction: 1, MinClients: 1, Quorum: 1},
		Train:          Train{Epochs: 1, BatchSize: 10, LearningRate: 0.05},
		Strategy:       Strategy{Name: "fedavg", ServerLR: 1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3, TrimBeta: 0.1, DPDelta: 1e-5},
		Codec:          "float32",
		Secure:         Secure{Threshold: 0.6, ClipRange: 1},
		Devices:        Devices{SpeedMedian: 200, Availability: 1},
		Attackers:      Attackers{Scale: 100},
	}
}

var (
	models     = map[string]bool{"logreg": true, "mlp": true, "cnn": true}
	transports = map[string]bool{"broker": true, "memory": true}
	clocks     = map[string]bool{"virtual": true, "wall": true}
	partitions = map[string]bool{"iid": true, "dirichlet": true, "shards": true, "quantity": true}
	codecs     = map[string]bool{"float32": true, "float16": true, "int8": true, "topk": true}
	strategies = map[string]bool{"fedavg": true, "fedavgm": true, "fedadam": true, "fedyogi": true, "fedadagrad": true,
		"median": true, "trimmed_mean": true, "krum": true, "multikrum": true, "bulyan": true}
	sumBased = map[string]bool{"fedavg": true, "fedavgm": true, "fedadam": true, "fedyogi": true, "fedadagrad": true}
	attacks  = map[string]bool{"label_flip": true, "sign_flip": true, "scale": true, "noise": true}
)

// Validate checks every field and every combination.
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...)))
	}
	if s.Name == "" {
		bad("name", "required")
	}
	if s.Model == "" {
		bad("model", "required (logreg, mlp, cnn or a path to a .wasm file)")
	} else if !models[s.Model] && !hasSuffix(s.Model, ".wasm") {
		bad("model", "%q is not a built-in model (logreg, mlp, cnn) nor a .wasm path", s.Model)
	}
	if s.Dataset != "mnist" && !(len(s.Dataset) > 4 && s.Dataset[:4] == "csv:") {
		bad("dataset", "%q: want mnist or csv:PATH", s.Dataset)
	}
	if s.TestSamples < 0 {
		bad("test_samples", "%d is negative", s.TestSamples)
	}
	oneOf(bad, "transport", s.Transport, transports)
	oneOf(bad, "clock", s.Clock, clocks)
	if s.Clients < 1 || s.Clients > 1_000_000 {
		bad("clients", "%d: want 1 to 1,000,000", s.Clients)
	}
	if s.Rounds < 1 || s.Rounds > 100_000 {
		bad("rounds", "%d: want 1 to 100,000", s.Rounds)
	}
	unit(bad, "target_accuracy", s.TargetAccuracy)
	if s.Deadline <= 0 {
		bad("deadline", "%v must be positive", s.Deadline)
	}
	oneOf(bad, "partition.kind", s.Partition.Kind, partitions)
	switch s.Partition.Kind {
	case "dirichlet", "quantity":
		if !(s.Partition.Alpha > 0) || math.IsInf(s.Partition.Alpha, 0) {
			bad("partition.alpha", "%v must be positive", s.Partition.Alpha)
		}
	case "shards":
		if s.Partition.ShardsPerClient < 1 {
			bad("partition.shards_per_client", "%d must be at least 1", s.Partition.ShardsPerClient)
		}
	}
	if s.Partition.MinPerClient < 0 {
		bad("partition.min_per_client", "%d is negative", s.Partition.MinPerClient)
	}
	if !(s.Selection.Fraction > 0 && s.Selection.Fraction <= 1) {
		bad("selection.fraction", "%v: want (0, 1]", s.Selection.Fraction)
	}
	if s.Selection.MinClients < 1 || s.Selection.MinClients > s.Clients {
		bad("selection.min_clients", "%d: want 1 to clients (%d)", s.Selection.MinClients, s.Clients)
	}
	if s.Selection.MaxClients < 0 || (s.Selection.MaxClients > 0 && s.Selection.MaxClients < s.Selection.MinClients) {
		bad("selection.max_clients", "%d: want 0 (no limit) or at least min_clients (%d)", s.Selection.MaxClients, s.Selection.MinClients)
	}
	if !(s.Selection.Quorum > 0 && s.Selection.Quorum <= 1) {
		bad("selection.quorum", "%v: want (0, 1]", s.Selection.Quorum)
	}
	if s.Train.Epochs < 1 || s.Train.Epochs > 1000 {
		bad("train.epochs", "%d: want 1 to 1000", s.Train.Epochs)
	}
	if s.Train.BatchSize < 1 || s.Train.BatchSize > 65536 {
		bad("train.batch_size", "%d: want 1 to 65536", s.Train.BatchSize)
	}
	positive(bad, "train.learning_rate", s.Train.LearningRate)
	nonNegative(bad, "train.proximal_mu", s.Train.ProximalMu)
	nonNegative(bad, "train.clip_norm", s.Train.ClipNorm)
	oneOf(bad, "strategy.name", s.Strategy.Name, strategies)
	positive(bad, "strategy.server_lr", s.Strategy.ServerLR)
	nonNegative(bad, "strategy.momentum", s.Strategy.Momentum)
	if !(s.Strategy.TrimBeta >= 0 && s.Strategy.TrimBeta < 0.5) {
		bad("strategy.trim_beta", "%v: want [0, 0.5)", s.Strategy.TrimBeta)
	}
	if s.Strategy.ByzantineF < 0 {
		bad("strategy.byzantine_f", "%d is negative", s.Strategy.ByzantineF)
	}
	nonNegative(bad, "strategy.dp_noise_multiplier", s.Strategy.DPNoise)
	nonNegative(bad, "strategy.dp_clip", s.Strategy.DPClip)
	if s.Strategy.DPNoise > 0 && !(s.Strategy.DPClip > 0) {
		bad("strategy.dp_clip", "must be positive when dp_noise_multiplier is set")
	}
	oneOf(bad, "codec", s.Codec, codecs)
	if s.Secure.Enabled {
		if !sumBased[s.Strategy.Name] {
			bad("secure.enabled", "secure aggregation reveals only the sum, so strategy %q (not sum-based) cannot be used with it; use fedavg or a FedOpt strategy", s.Strategy.Name)
		}
		if !(s.Secure.Threshold > 0 && s.Secure.Threshold <= 1) {
			bad("secure.threshold", "%v: want a fraction of the cohort in (0, 1]", s.Secure.Threshold)
		}
		if s.Secure.Degree < 0 {
			bad("secure.degree", "%d is negative", s.Secure.Degree)
		}
		positive(bad, "secure.clip_range", s.Secure.ClipRange)
	}
	positive(bad, "devices.speed_median", s.Devices.SpeedMedian)
	nonNegative(bad, "devices.speed_sigma", s.Devices.SpeedSigma)
	unit(bad, "devices.availability", s.Devices.Availability)
	unit(bad, "devices.diurnal", s.Devices.Diurnal)
	unit(bad, "devices.dropout", s.Devices.Dropout)
	nonNegative(bad, "devices.bandwidth_bps", s.Devices.BandwidthBps)
	if s.Devices.Latency < 0 {
		bad("devices.latency", "%v is negative", s.Devices.Latency)
	}
	unit(bad, "attackers.fraction", s.Attackers.Fraction)
	if s.Attackers.Fraction > 0 {
		oneOf(bad, "attackers.kind", s.Attackers.Kind, attacks)
		positive(bad, "attackers.scale", s.Attackers.Scale)
	}
	if st := s.ReconnectStorm; st.Round != 0 || st.Fraction != 0 || st.Within != 0 {
		if st.Round < 1 || st.Round > s.Rounds {
			bad("reconnect_storm.round", "%d: want 1 to rounds (%d)", st.Round, s.Rounds)
		}
		if !(st.Fraction > 0 && st.Fraction <= 1) {
			bad("reconnect_storm.fraction", "%v: want (0, 1]", st.Fraction)
		}
		if st.Within < 0 || st.Within > 10*time.Minute {
			bad("reconnect_storm.within", "%v: want 0 to 10m", st.Within)
		}
		if s.Transport != "broker" {
			bad("reconnect_storm", "needs transport broker (devices of the in-memory transport have no connection to lose)")
		}
	}
	return errors.Join(errs...)
}

func oneOf(bad func(string, string, ...any), field, v string, allowed map[string]bool) {
	if !allowed[v] {
		bad(field, "%q is not one of %v", v, keys(allowed))
	}
}

func unit(bad func(string, string, ...any), field string, v float64) {
	if !(v >= 0 && v <= 1) {
		bad(field, "%v: want [0, 1]", v)
	}
}

func positive(bad func(string, string, ...any), field string, v float64) {
	if !(v > 0) || math.IsInf(v, 0) {
		bad(field, "%v must be positive and finite", v)
	}
}

func nonNegative(bad func(string, string, ...any), field string, v float64) {
	if !(v >= 0) || math.IsInf(v, 0) {
		bad(field, "%v must be non-negative and finite", v)
	}
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }
