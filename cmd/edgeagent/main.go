// Command edgeagent is the fedge edge agent daemon: it connects to the
// fleet's MQTT broker, installs signed global models, trains them on local
// data when the coordinator asks, and serves local predictions.
//
//	edgeagent run --config agent.yaml [--broker URL] [--device-id ID] [--data SPEC] [--storage DIR] ...
//	edgeagent keygen [--config agent.yaml | --storage DIR]   print the device public key (created if needed)
//	edgeagent version
//
// Everything it wires together lives in edgeagent/agent and
// edgeagent/predict; this file only parses flags and configuration.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/edgeagent/predict"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/logging"
	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
)

func main() {
	// SIGTERM and SIGINT stop the agent gracefully.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeagent:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  edgeagent run --config agent.yaml [flags]   run the agent (flags override the file; see run -h)
  edgeagent keygen [--config agent.yaml | --storage DIR]
                                              print the device public key, creating it if needed
  edgeagent version                           print the version`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "run":
		return runAgent(ctx, args[1:], stderr)
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "edgeagent %s %s %s/%s\n", agent.Version, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
		return nil
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// configFlags registers the overriding flags on fs and returns a function
// that loads the config file (if any) and applies the flags set.
func configFlags(fs *flag.FlagSet) func() (*agent.Config, error) {
	path := fs.String("config", "", "agent.yaml path")
	str := map[string]*string{}
	for _, f := range []struct{ name, help string }{
		{"fleet", "fleet id"}, {"device-id", "device id"}, {"broker", "broker URL (tcp://host:port or ssl://host:port)"},
		{"username", "broker username"}, {"password", "broker password"}, {"ca-file", "broker CA PEM file"},
		{"client-cert", "client certificate PEM (mTLS)"}, {"client-key", "client key PEM (mTLS)"},
		{"coordinator-key", "pinned coordinator Ed25519 public key (hex, base64, PEM or file)"},
		{"enrollment-token", "enrollment token"}, {"data", "data source (mnist:DIR?part=K/N, mnist-idx:IMG,LBL, csv:PATH?classes=C)"},
		{"storage", "storage directory"}, {"predict-listen", "inference API address (127.0.0.1:PORT, unix:/path or off)"},
		{"log-format", "json or console"}, {"log-level", "debug, info, warn or error"},
	} {
		str[f.name] = fs.String(f.name, "", f.help)
	}
	return func() (*agent.Config, error) {
		c := &agent.Config{}
		if *path != "" {
			var err error
			if c, err = agent.LoadConfig(*path); err != nil {
				return nil, err
			}
		}
		set := map[string]*string{
			"fleet": &c.Fleet, "device-id": &c.DeviceID, "broker": &c.Broker.URL, "username": &c.Broker.Username,
			"password": &c.Broker.Password, "ca-file": &c.Broker.CAFile, "client-cert": &c.Broker.ClientCert,
			"client-key": &c.Broker.ClientKey, "coordinator-key": &c.CoordinatorKey, "enrollment-token": &c.EnrollmentToken,
			"data": &c.Data, "storage": &c.StorageDir, "predict-listen": &c.PredictListen,
			"log-format": &c.Log.Format, "log-level": &c.Log.Level,
		}
		fs.Visit(func(f *flag.Flag) {
			if dst, ok := set[f.Name]; ok {
				*dst = *str[f.Name]
			}
		})
		c.SetDefaults()
		return c, nil
	}
}

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	load := configFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := load()
	if err != nil {
		return err
	}
	if c.StorageDir == "" {
		return errors.New("keygen: --storage or a config with storage_dir is required")
	}
	if err := os.MkdirAll(c.StorageDir, 0o700); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	key, err := agent.LoadOrCreateKey(filepath.Join(c.StorageDir, "device.key"))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, hex.EncodeToString(key.Public().(ed25519.PublicKey)))
	return nil
}

func tlsConfig(b agent.Broker) (*tls.Config, error) {
	if b.CAFile != "" {
		return tlsutil.ClientConfig(b.CAFile, b.ClientCert, b.ClientKey, "")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(b.ClientCert, b.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func runAgent(parent context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	load := configFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := load()
	if err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	log, err := logging.New(c.Log.Format, c.Log.Level)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
	ctx, stop := context.WithCancel(parent)
	defer stop()

	if err := os.MkdirAll(c.StorageDir, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	key, err := agent.LoadOrCreateKey(filepath.Join(c.StorageDir, "device.key"))
	if err != nil {
		return err
	}
	coord, err := agent.ParsePublicKey(c.CoordinatorKey)
	if err != nil {
		return err
	}
	state, err := agent.OpenBadgerStore(filepath.Join(c.StorageDir, "state"))
	if err != nil {
		return err
	}
	defer state.Close()
	models, err := agent.OpenDirModelStore(filepath.Join(c.StorageDir, "models"), coord)
	if err != nil {
		return err
	}
	spec, err := agent.ParseDataSpec(c.Data)
	if err != nil {
		return err
	}
	src, err := spec.Load()
	if err != nil {
		return err
	}
	// Loading decompresses and converts the whole file; give the transient
	// buffers back to the OS now rather than when the scavenger gets to it.
	debug.FreeOSMemory()
	host, err := runtime.NewHost(ctx, runtime.Config{MaxMemoryPages: c.Limits.MaxMemoryPages,
		CallTimeout: c.Limits.CallTimeout, GrantWASI: !c.Limits.DenyWASI, Logger: log.Named("runtime")})
	if err != nil {
		return err
	}
	defer host.Close(context.Background())
	a, err := agent.New(agent.Options{
		Fleet: c.Fleet, DeviceID: c.DeviceID, Key: key, CoordinatorKey: coord, State: state, Models: models,
		Host: host, Data: src, Log: log, Tags: c.Tags, EnrollmentToken: c.EnrollmentToken,
		MemoryBytes: uint64(c.Limits.MaxMemoryPages) * 65536, MaxTaskTime: c.Limits.MaxTrainTime,
	})
	if err != nil {
		return err
	}
	will, err := a.Will()
	if err != nil {
		return err
	}
	mc := mqtt.Config{BrokerURL: c.Broker.URL, ClientID: c.DeviceID, // the fleet broker requires client id = device id
		Username: c.Broker.Username, Password: c.Broker.Password, Will: will}
	if u, _ := url.Parse(c.Broker.URL); u.Scheme != "tcp" && u.Scheme != "mqtt" {
		if mc.TLS, err = tlsConfig(c.Broker); err != nil {
			return err
		}
	}
	tr, err := mqtt.Dial(ctx, mc, log.Named("mqtt"))
	if err != nil {
		return err
	}
	defer tr.Close()
	log.Info("edgeagent started", zap.String("fleet", c.Fleet), zap.String("device", c.DeviceID),
		zap.String("broker", c.Broker.URL), zap.Int("samples", src.Len()))

	errc := make(chan error, 2)
	if c.PredictListen != "off" {
		srv, err := predict.New(predict.Config{Host: host, Models: models, Log: log.Named("predict")})
		if err != nil {
			return err
		}
		ln, err := predict.Listen(c.PredictListen)
		if err != nil {
			return err
		}
		defer srv.Close(context.Background())
		log.Info("inference API listening", zap.String("addr", c.PredictListen))
		go func() { errc <- srv.Serve(ctx, ln) }()
	}
	go watchReconnects(ctx, tr, a)
	go func() { errc <- a.Run(ctx, tr) }()
	err = <-errc
	signalled := parent.Err() != nil
	stop()
	if c.PredictListen != "off" {
		<-errc // the other one stops with ctx
	}
	if signalled {
		gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := a.Goodbye(gctx, tr); err != nil {
			log.Warn("offline status not sent", zap.Error(err))
		}
		cancel()
		log.Info("edgeagent stopped")
		return nil
	}
	return err
}

// watchReconnects tells the agent when the MQTT client has reconnected, so
// it says hello again and re-publishes pending results without waiting for
// its resend interval.
func watchReconnects(ctx context.Context, tr *mqtt.Client, a *agent.Agent) {
	seen := tr.Stats().Connects
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := tr.Stats().Connects; n != seen {
				seen = n
				a.Reconnected()
			}
		}
	}
}
