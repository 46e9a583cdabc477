package admin

import (
	"context"
	"encoding/json"
	"errors"
)

// Errors an API implementation wraps so the handler picks the HTTP status.
var (
	// ErrBadRequest: the request is malformed or asks for something
	// invalid (400).
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: the named thing does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: not possible in the current state, e.g. a run is active
	// (409).
	ErrConflict = errors.New("conflict")
)

// StatusSchema names the version of the StatusDoc JSON schema. Fields are
// only ever added within one schema version.
const StatusSchema = "fedge.round.status/v1"

// API is what the admin HTTP handler serves; coordinator/server
// implements it. actor names who asked (for the audit log).
type API interface {
	StartRun(ctx context.Context, actor string, req StartRequest) (*RunDoc, error)
	StopRun(ctx context.Context, actor, reason string) (*RunDoc, error)
	Status(ctx context.Context) (*StatusDoc, error)
	Runs(ctx context.Context) ([]RunDoc, error)
	Models(ctx context.Context) (*ModelsDoc, error)
	AddModel(ctx context.Context, actor, name string, wasm []byte) (*ModuleDoc, error)
	Rollback(ctx context.Context, actor string, version uint64) (*VersionDoc, error)
	Devices(ctx context.Context) ([]DeviceDoc, error)
	AddDevice(ctx context.Context, actor, id string) (*AddDeviceResult, error)
	ApproveDevice(ctx context.Context, actor, id string) (*DeviceDoc, error)
	Audit(ctx context.Context, after uint64, limit int) ([]AuditDoc, error)
	// PublicKey is the coordinator's Ed25519 public key, hex.
	PublicKey() string
}

// StartRequest is the body of POST /v1/rounds: a multi-round run.
type StartRequest struct {
	Model          string            `json:"model"`
	Strategy       string            `json:"strategy"`                  // default fedavg
	StrategyConfig json.RawMessage   `json:"strategy_config,omitempty"` // see server.StrategyConfig
	Fraction       float64           `json:"fraction"`                  // default 1
	MinClients     uint32            `json:"min_clients"`               // default 1
	MaxClients     uint32            `json:"max_clients,omitempty"`
	Quorum         uint32            `json:"quorum,omitempty"` // default min_clients
	Tags           map[string]string `json:"tags,omitempty"`   // tag filter
	Epochs         uint32            `json:"epochs"`           // default 1
	BatchSize      uint32            `json:"batch_size"`       // default 32
	LearningRate   float32           `json:"learning_rate"`    // default 0.05
	ProximalMu     float32           `json:"proximal_mu,omitempty"`
	ClipNorm       float32           `json:"clip_norm,omitempty"`
	MaxSamples     uint32            `json:"max_samples,omitempty"`
	Codec          string            `json:"codec,omitempty"` // float32 (default), float16, int8, topk
	TopKFraction   float32           `json:"topk_fraction,omitempty"`
	DeadlineMs     int64             `json:"deadline_ms"` // training deadline per round; default 60000
	Rounds         uint32            `json:"rounds"`      // default 1 unless target_accuracy is set
	TargetAccuracy float64           `json:"target_accuracy,omitempty"`
	Seed           uint64            `json:"seed,omitempty"`
	FederatedEval  bool              `json:"federated_eval,omitempty"`
	ServerEval     bool              `json:"server_eval,omitempty"`
	EvalTimeoutMs  int64             `json:"eval_timeout_ms,omitempty"` // default 30000 when evaluating
	EvalBatchSize  uint32            `json:"eval_batch_size,omitempty"`
	EvalMaxSamples uint32            `json:"eval_max_samples,omitempty"`
	MaxFailed      uint32            `json:"max_failed_rounds,omitempty"`
	Reinit         bool              `json:"reinit,omitempty"` // start from fresh initial weights, not the latest version
	// Secure runs every round with secure aggregation (SecAgg+): the
	// coordinator learns only the sum of the updates. Only sum-based
	// strategies (fedavg and the FedOpt family) accept it.
	Secure bool `json:"secure,omitempty"`
	// SecureThreshold is the Shamir threshold as a fraction of each
	// device's share holders (default 0.6).
	SecureThreshold float64 `json:"secure_threshold,omitempty"`
	// SecureDegree is the neighbours per device in the SecAgg+ graph
	// (even; default 0: the complete graph).
	SecureDegree int `json:"secure_degree,omitempty"`
	// SecureClipRange bounds each delta coordinate before quantization
	// (default 1).
	SecureClipRange float64 `json:"secure_clip_range,omitempty"`
	// DPNoiseMultiplier > 0 turns on central differential privacy
	// (DP-FedAvg): each update is clipped to DPClip, weighted uniformly,
	// and Gaussian noise of std DPNoiseMultiplier·DPClip is added to the
	// sum. Only sum-based strategies accept it.
	DPNoiseMultiplier float64 `json:"dp_noise_multiplier,omitempty"`
	// DPClip is the L2 bound of each update (required with DP); it becomes
	// the devices' clip_norm (clip_norm, if set, must equal it).
	DPClip float64 `json:"dp_clip,omitempty"`
	// DPDelta is the δ at which ε is reported (default 1e-5).
	DPDelta float64 `json:"dp_delta,omitempty"`
	// DPSamplingRate is the per-round participation probability q the
	// accountant assumes (default fraction).
	DPSamplingRate float64 `json:"dp_sampling_rate,omitempty"`
	// DPNoiseSeed keys the noise stream so a simulation replays exactly;
	// 0 (the production setting) draws a fresh random key per coordinator
	// process, since noise from a known key can be subtracted.
	DPNoiseSeed uint64 `json:"dp_noise_seed,omitempty"`
}

// StatusDoc is GET /v1/rounds/status and `coordinator round status --json`.
// Schema StatusSchema; documented in README.md of this package.
type StatusDoc struct {
	Schema        string            `json:"schema"`
	NowUnixMs     int64             `json:"now_unix_ms"`
	ModelVersion  uint64            `json:"model_version"`
	Run           *RunDoc           `json:"run"`
	Round         *RoundDoc         `json:"round"`
	History       []HistoryEntry    `json:"history"`
	Rejections    map[string]uint64 `json:"rejections"`
	DevicesOnline int               `json:"devices_online"`
	// Inbound is the coordinator's inbox and health (additive in schema v1).
	Inbound *InboundDoc `json:"inbound,omitempty"`
}

// InboundDoc reports the coordinator's inbound queues: what waits, what was
// shed and why, and the health verdict of /healthz.
type InboundDoc struct {
	Healthy  bool                         `json:"healthy"`
	Problems []string                     `json:"problems"`
	Queued   map[string]int               `json:"queued"`   // by kind
	Shed     map[string]map[string]uint64 `json:"shed"`     // by kind, then reason
	Accepted map[string]uint64            `json:"accepted"` // queued, by kind
	// TransportShed counts messages the MQTT client shed on a full queue
	// (should stay 0: the inbox drains it at once).
	TransportShed uint64 `json:"transport_shed"`
	ProbeRTTMs    int64  `json:"probe_rtt_ms"`
}

// RunDoc describes one run.
type RunDoc struct {
	RunID           uint64  `json:"run_id"`
	State           string  `json:"state"` // running, done, stopped, failed
	Model           string  `json:"model"`
	Strategy        string  `json:"strategy"`
	Rounds          uint32  `json:"rounds"`
	TargetAccuracy  float64 `json:"target_accuracy"`
	RoundsCommitted uint32  `json:"rounds_committed"`
	CurrentRound    uint64  `json:"current_round"`
	ModelVersion    uint64  `json:"model_version"`
	LastAccuracy    float64 `json:"last_accuracy"`
	HasAccuracy     bool    `json:"has_accuracy"`
	Reason          string  `json:"reason"`
	StartedUnixMs   int64   `json:"started_unix_ms"`
	FinishedUnixMs  int64   `json:"finished_unix_ms"`
	// DP is present when the run has differential privacy.
	DP *DPDoc `json:"dp,omitempty"`
	// Secure is present when the run uses secure aggregation.
	Secure *SecureDoc `json:"secure,omitempty"`
}

// SecureDoc is a secure aggregation run's settings (SecAgg+).
type SecureDoc struct {
	Threshold float64 `json:"threshold"` // Shamir threshold, fraction of a device's share holders
	Degree    int     `json:"degree"`    // neighbours per device; 0 is the complete graph
	ClipRange float64 `json:"clip_range"`
}

// DPDoc is a run's differential privacy: its settings and the privacy
// spent by its committed rounds.
type DPDoc struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Clip            float64 `json:"clip"`
	SamplingRate    float64 `json:"sampling_rate"`
	Delta           float64 `json:"delta"`
	// Epsilon is the cumulative ε at Delta after RoundsCharged rounds
	// (RDP accountant for the sampled Gaussian mechanism).
	Epsilon       float64 `json:"epsilon"`
	RoundsCharged uint32  `json:"rounds_charged"`
}

// RoundDoc is the active run's current round.
type RoundDoc struct {
	RoundID        uint64 `json:"round_id"`
	Phase          string `json:"phase"` // waiting, training, evaluating, done, failed, aborted
	Selected       int    `json:"selected"`
	Accepted       int    `json:"accepted"`
	Dropped        int    `json:"dropped"` // selected devices that gave up their task
	DeadlineUnixMs int64  `json:"deadline_unix_ms"`
}

// HistoryEntry is one finished round of the run in Run.
type HistoryEntry struct {
	RoundID        uint64            `json:"round_id"`
	ModelVersion   uint64            `json:"model_version"`
	Failed         bool              `json:"failed"`
	Selected       uint32            `json:"selected"`
	Accepted       uint32            `json:"accepted"`
	Late           uint32            `json:"late"`
	Dropped        uint32            `json:"dropped"`
	TrainLoss      float64           `json:"train_loss"`
	TrainAccuracy  float64           `json:"train_accuracy"`
	EvalLoss       float64           `json:"eval_loss"`
	EvalAccuracy   float64           `json:"eval_accuracy"`
	EvalSamples    uint64            `json:"eval_samples"`
	HasServerEval  bool              `json:"has_server_eval"`
	ServerLoss     float64           `json:"server_loss"`
	ServerAccuracy float64           `json:"server_accuracy"`
	Accuracy       float64           `json:"accuracy"` // server accuracy if any, else federated, else train
	DurationMs     int64             `json:"duration_ms"`
	Rejections     map[string]uint64 `json:"rejections"`
}

// ModelsDoc is GET /v1/models.
type ModelsDoc struct {
	Modules  []ModuleDoc  `json:"modules"`
	Versions []VersionDoc `json:"versions"`
}

// ModuleDoc is one registered model module.
type ModuleDoc struct {
	Name     string `json:"name"`
	WasmHash string `json:"wasm_hash"`
	Bytes    int    `json:"bytes"`
	Params   int    `json:"params"`
	Input    []int  `json:"input"`
	Classes  int    `json:"classes"`
	Builtin  bool   `json:"builtin"`
}

// VersionDoc is one global model version with its lineage.
type VersionDoc struct {
	Version       uint64  `json:"version"`
	Model         string  `json:"model"`
	ParentVersion uint64  `json:"parent_version"`
	RoundID       uint64  `json:"round_id"`
	RunID         uint64  `json:"run_id"`
	Strategy      string  `json:"strategy"`
	Participants  uint32  `json:"participants"`
	WeightsHash   string  `json:"weights_hash"`
	TrainAccuracy float64 `json:"train_accuracy"`
	CreatedUnixMs int64   `json:"created_unix_ms"`
}

// DeviceDoc is one registered device.
type DeviceDoc struct {
	DeviceID       string            `json:"device_id"`
	State          string            `json:"state"` // pending, approved, revoked
	Online         bool              `json:"online"`
	PublicKey      string            `json:"public_key,omitempty"`
	Arch           string            `json:"arch,omitempty"`
	MemoryBytes    uint64            `json:"memory_bytes,omitempty"`
	SampleCount    uint64            `json:"sample_count,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	LastSeenUnixMs int64             `json:"last_seen_unix_ms"`
	EnrolledUnixMs int64             `json:"enrolled_unix_ms"`
}

// AddDeviceResult is returned once by POST /v1/devices: the device's broker
// password and one-time enrollment token. Neither is stored in clear.
type AddDeviceResult struct {
	DeviceID string `json:"device_id"`
	Username string `json:"username"`
	Password string `json:"password"`
	Token    string `json:"enrollment_token"`
}

// AuditDoc is one audit log entry.
type AuditDoc struct {
	Seq    uint64 `json:"seq"`
	UnixMs int64  `json:"unix_ms"`
	Actor  string `json:"actor"`
	Action string `json:"action"`
	Target string `json:"target"`
	Detail string `json:"detail"`
}
