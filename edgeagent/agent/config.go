package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedge-dev/fedge/internal/logging"
	"github.com/fedge-dev/fedge/internal/topics"
)

// DefaultPredictListen is the default local inference address.
const DefaultPredictListen = "127.0.0.1:8750"

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid agent config")

// Config is the agent's configuration file (agent.yaml). Flags of
// cmd/edgeagent override single fields.
type Config struct {
	// Fleet defaults to DefaultFleet, the coordinator's default.
	Fleet    string `yaml:"fleet"`
	DeviceID string `yaml:"device_id"`
	Broker   Broker `yaml:"broker"`
	// CoordinatorKey pins the coordinator's Ed25519 public key: 64 hex
	// digits, base64, a PEM "PUBLIC KEY" block, or the path of a file
	// holding any of these.
	CoordinatorKey string `yaml:"coordinator_key"`
	// EnrollmentToken, if set, is sent with the enrollment request of a
	// device not yet enrolled.
	EnrollmentToken string `yaml:"enrollment_token"`
	// Data is the local data source (see DataSpec).
	Data string `yaml:"data"`
	// StorageDir holds the device key, the state database and the models.
	StorageDir string            `yaml:"storage_dir"`
	Limits     Limits            `yaml:"limits"`
	Tags       map[string]string `yaml:"tags"`
	// PredictListen is "host:port" (loopback only) or "unix:/path"; "off"
	// disables the inference server. Default 127.0.0.1:8750.
	PredictListen string `yaml:"predict_listen"`
	Log           Log    `yaml:"log"`
}

// Broker is how the agent reaches the MQTT broker.
type Broker struct {
	URL        string `yaml:"url"` // tcp://host:port or ssl://host:port (also tls://, mqtts://)
	Username   string `yaml:"username"`
	Password   string `yaml:"password"`
	ClientCert string `yaml:"client_cert"` // PEM file, with ClientKey, for mutual TLS
	ClientKey  string `yaml:"client_key"`
	CAFile     string `yaml:"ca_file"` // PEM roots for the broker's certificate (default: system roots)
}

// Limits are resource limits of the agent.
type Limits struct {
	// MaxMemoryPages caps a WASM instance's memory in 64 KiB pages
	// (default 4096 = 256 MiB).
	MaxMemoryPages uint32 `yaml:"max_memory_pages"`
	// CallTimeout bounds every call into a model (default 30s).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// MaxTrainTime bounds one task's training or evaluation (default 30m).
	MaxTrainTime time.Duration `yaml:"max_train_time"`
	// DenyWASI refuses models that import wasi_snapshot_preview1 (models
	// built with Go's wasip1 port need it). By default such models get a
	// WASI with no files, environment, arguments, real clock or entropy
	// (runtime.Config.GrantWASI), the same the coordinator checks them with.
	DenyWASI bool `yaml:"deny_wasi"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // json (default) or console
	Level  string `yaml:"level"`  // debug, info (default), warn, error
}

// LoadConfig reads and validates a YAML config file. Unknown keys are
// errors.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	defer f.Close()
	c, err := DecodeConfig(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, nil
}

// DecodeConfig parses a YAML config without validating it (flags may still
// fill fields; call Validate afterwards) and fills defaults.
func DecodeConfig(r io.Reader) (*Config, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	c := &Config{}
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.SetDefaults()
	return c, nil
}

// DefaultFleet is the fleet of an agent configured without one: the
// fleet `coordinator serve` runs when not given --fleet.
const DefaultFleet = "default"

// SetDefaults fills empty optional fields.
func (c *Config) SetDefaults() {
	if c.Fleet == "" {
		c.Fleet = DefaultFleet
	}
	if c.PredictListen == "" {
		c.PredictListen = DefaultPredictListen
	}
	if c.Limits.MaxMemoryPages == 0 {
		c.Limits.MaxMemoryPages = 4096
	}
	if c.Limits.CallTimeout == 0 {
		c.Limits.CallTimeout = 30 * time.Second
	}
	if c.Limits.MaxTrainTime == 0 {
		c.Limits.MaxTrainTime = 30 * time.Minute
	}
	if c.Log.Format == "" {
		c.Log.Format = logging.FormatJSON
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Validate checks every field and returns the first problem found.
func (c *Config) Validate() error {
	if err := topics.ValidateID(c.Fleet); err != nil {
		return bad("fleet: %v", err)
	}
	if err := topics.ValidateID(c.DeviceID); err != nil {
		return bad("device_id: %v", err)
	}
	if err := c.Broker.validate(); err != nil {
		return err
	}
	if c.CoordinatorKey == "" {
		return bad("coordinator_key is required (the coordinator's Ed25519 public key)")
	}
	if _, err := ParsePublicKey(c.CoordinatorKey); err != nil {
		return bad("coordinator_key: %v", err)
	}
	if len(c.EnrollmentToken) > 256 {
		return bad("enrollment_token longer than 256 bytes")
	}
	if c.Data == "" {
		return bad("data is required (mnist:DIR, mnist-idx:IMAGES,LABELS or csv:PATH)")
	}
	if _, err := ParseDataSpec(c.Data); err != nil {
		return bad("data: %v", err)
	}
	if c.StorageDir == "" {
		return bad("storage_dir is required")
	}
	l := c.Limits
	if l.MaxMemoryPages < 16 || l.MaxMemoryPages > 65536 {
		return bad("limits.max_memory_pages %d outside 16..65536", l.MaxMemoryPages)
	}
	if l.CallTimeout < time.Millisecond || l.CallTimeout > time.Hour {
		return bad("limits.call_timeout %v outside 1ms..1h", l.CallTimeout)
	}
	if l.MaxTrainTime < time.Second || l.MaxTrainTime > 24*time.Hour {
		return bad("limits.max_train_time %v outside 1s..24h", l.MaxTrainTime)
	}
	if len(c.Tags) > 64 {
		return bad("%d tags, at most 64", len(c.Tags))
	}
	for k, v := range c.Tags {
		if k == "" || len(k) > 64 || len(v) > 256 {
			return bad("tag %q: keys 1..64 bytes, values up to 256", k)
		}
	}
	if err := ValidateListen(c.PredictListen); err != nil {
		return bad("predict_listen: %v", err)
	}
	if _, err := logging.NewTo(io.Discard, c.Log.Format, c.Log.Level); err != nil {
		return bad("log: %v", err)
	}
	return nil
}

func (b Broker) validate() error {
	if b.URL == "" {
		return bad("broker.url is required (tcp://host:port or ssl://host:port)")
	}
	u, err := url.Parse(b.URL)
	if err != nil {
		return bad("broker.url: %v", err)
	}
	tls := false
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts", "tcps":
		tls = true
	default:
		return bad("broker.url scheme %q: want tcp or ssl", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return bad("broker.url %q needs host:port", b.URL)
	}
	if (b.ClientCert == "") != (b.ClientKey == "") {
		return bad("broker.client_cert and broker.client_key go together")
	}
	if !tls && (b.ClientCert != "" || b.CAFile != "") {
		return bad("broker certificates need an ssl:// url")
	}
	if b.Password != "" && b.Username == "" {
		return bad("broker.password without broker.username")
	}
	for _, f := range []string{b.ClientCert, b.ClientKey, b.CAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return bad("broker: %v", err)
		}
	}
	return nil
}

// ValidateListen checks a predict listen address: "off", "unix:/path" or a
// loopback host:port.
func ValidateListen(s string) error {
	if s == "off" {
		return nil
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return fmt.Errorf("empty unix socket path")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if port == "" {
		return fmt.Errorf("%q has no port", s)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q is not a loopback address (the inference API is local only)", host)
	}
	return nil
}
