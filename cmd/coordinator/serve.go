package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/logging"
	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	"github.com/fedge-dev/fedge/internal/transport/mqtt"
)

type serveFlags struct {
	memoryLimit                  string
	data, fleet                  string
	listen, tlsListen            string
	tlsCert, tlsKey, tlsClientCA string
	brokerURL, brokerUser        string
	brokerPasswordFile, brokerCA string
	brokerCert, brokerKey        string
	adminAddr                    string
	adminCert, adminKey          string
	adminClientCA                string
	logFormat, logLevel          string
	testData                     string
	tick                         time.Duration
}

func serve(args []string, stderr io.Writer) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.data, "data", "fedge-data", "data directory (key, admin token, store, models)")
	fs.StringVar(&f.fleet, "fleet", "default", "fleet id")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:1883", "embedded broker TCP address (empty: none)")
	fs.StringVar(&f.tlsListen, "tls-listen", "", "embedded broker TLS address (needs --tls-cert, --tls-key)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "broker TLS certificate (PEM)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "broker TLS private key (PEM)")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "require client certificates signed by this CA (mTLS)")
	fs.StringVar(&f.brokerURL, "broker", "", "external broker URL (tcp:// or ssl://) instead of the embedded one")
	fs.StringVar(&f.brokerUser, "broker-user", "coordinator", "username at the external broker")
	fs.StringVar(&f.brokerPasswordFile, "broker-password-file", "", "file holding the external broker password")
	fs.StringVar(&f.brokerCA, "broker-ca", "", "CA file for an ssl:// external broker")
	fs.StringVar(&f.brokerCert, "broker-cert", "", "client certificate for the external broker")
	fs.StringVar(&f.brokerKey, "broker-key", "", "client key for the external broker")
	fs.StringVar(&f.adminAddr, "admin", "127.0.0.1:8080", "admin API and console listen address")
	fs.StringVar(&f.adminCert, "admin-tls-cert", "", "serve the admin API and console over TLS only, with this certificate (PEM; needs --admin-tls-key)")
	fs.StringVar(&f.adminKey, "admin-tls-key", "", "private key of --admin-tls-cert (PEM)")
	fs.StringVar(&f.adminClientCA, "admin-tls-client-ca", "", "with --admin-tls-cert: also require admin client certificates signed by this CA (mTLS)")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.testData, "test-data", "", "MNIST IDX directory for server-side evaluation (optional)")
	fs.DurationVar(&f.tick, "tick", time.Second, "round clock tick")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "soft memory limit of the Go heap, e.g. 512MiB (empty: $GOMEMLIMIT or none); the GC works harder near it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.memoryLimit != "" {
		n, err := parseBytes(f.memoryLimit)
		if err != nil {
			return fmt.Errorf("%w: --memory-limit: %v", errUsage, err)
		}
		debug.SetMemoryLimit(n)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: serve takes no arguments, got %q", errUsage, fs.Args())
	}
	if err := topics.ValidateID(f.fleet); err != nil {
		return fmt.Errorf("--fleet: %w", err)
	}
	if (f.adminCert == "") != (f.adminKey == "") {
		return fmt.Errorf("%w: --admin-tls-cert and --admin-tls-key go together", errUsage)
	}
	if f.adminClientCA != "" && f.adminCert == "" {
		return fmt.Errorf("%w: --admin-tls-client-ca needs --admin-tls-cert and --admin-tls-key", errUsage)
	}
	if f.brokerURL == "" && f.listen == "" && f.tlsListen == "" {
		return fmt.Errorf("%w: no broker: give --listen/--tls-listen or --broker", errUsage)
	}
	log, err := logging.New(f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveWith(ctx, f, log)
}

func serveWith(ctx context.Context, f serveFlags, log *zap.Logger) error {
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	key, created, err := server.LoadOrCreateKey(filepath.Join(f.data, server.KeyFile))
	if err != nil {
		return err
	}
	if created {
		log.Info("generated coordinator key", zap.String("public_key", server.PublicKeyHex(key)))
	}
	token, err := server.LoadOrCreateSecret(filepath.Join(f.data, server.TokenFile), 32)
	if err != nil {
		return err
	}
	nonceKey, err := server.LoadOrCreateSecret(filepath.Join(f.data, server.NonceKeyFile), 32)
	if err != nil {
		return err
	}
	st, err := store.Open(store.BadgerOptions(filepath.Join(f.data, server.StoreDir)), log.Named("store"))
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	gcCtx, gcStop := context.WithCancel(ctx)
	defer gcStop() // before the store closes
	go func() {
		// Reclaim value-log space left by deleted in-flight updates.
		for {
			select {
			case <-gcCtx.Done():
				return
			case <-time.After(10 * time.Minute):
				if _, err := st.RunValueLogGC(0.5); err != nil {
					log.Warn("value log gc", zap.Error(err))
				}
			}
		}
	}()
	host, err := runtime.NewHost(ctx, runtime.Config{GrantWASI: true, Logger: log.Named("wasm")})
	if err != nil {
		return err
	}
	defer func() { _ = host.Close(context.WithoutCancel(ctx)) }()
	models, err := registry.NewModels(filepath.Join(f.data, server.ModelsDir), host)
	if err != nil {
		return err
	}
	creds, err := registry.OpenCredentialFile(filepath.Join(f.data, server.CredentialsFile))
	if err != nil {
		return err
	}

	var bcreds *broker.Credentials
	var embedded *broker.Broker // its Stats are exported on /metrics
	// A deep queue: the inbox drains it at once, so it only has to absorb
	// what arrives while the reader waits for a core.
	mcfg := mqtt.Config{ClientID: "coordinator-" + f.fleet, QueueSize: 4096}
	if f.brokerURL == "" {
		b, c, url, password, err := startBroker(f, creds, log)
		if err != nil {
			return err
		}
		defer func() { _ = b.Close() }()
		bcreds, embedded = c, b
		mcfg.BrokerURL, mcfg.Username, mcfg.Password = url, "coordinator", password
	} else {
		mcfg.BrokerURL, mcfg.Username = f.brokerURL, f.brokerUser
		if f.brokerPasswordFile != "" {
			pw, err := os.ReadFile(f.brokerPasswordFile)
			if err != nil {
				return fmt.Errorf("--broker-password-file: %w", err)
			}
			mcfg.Password = strings.TrimSpace(string(pw))
		}
		if f.brokerCA != "" || f.brokerCert != "" {
			if mcfg.TLS, err = tlsutil.ClientConfig(f.brokerCA, f.brokerCert, f.brokerKey, ""); err != nil {
				return fmt.Errorf("external broker TLS: %w", err)
			}
		}
	}
	tr, err := mqtt.Dial(ctx, mcfg, log.Named("mqtt"))
	if err != nil {
		return fmt.Errorf("connect to broker %s: %w", mcfg.BrokerURL, err)
	}
	defer func() { _ = tr.Close() }()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if embedded != nil {
		reg.MustRegister(embedded.Collector())
	}
	met, err := server.NewMetrics(reg)
	if err != nil {
		return err
	}
	scfg := server.Config{
		Fleet: f.fleet, Transport: transport.Transport(tr), Store: st, Log: log.Named("coordinator"), Key: key,
		Models: models, BrokerCredentials: bcreds, NonceKey: []byte(nonceKey),
		TickInterval: f.tick, Metrics: met, ProbeInterval: 2 * time.Second,
	}
	if f.brokerURL == "" {
		// Device passwords are issued for the embedded broker only; an
		// external broker's accounts are managed there.
		scfg.Credentials = creds
	}
	if f.testData != "" {
		_, test, err := data.LoadMNIST(f.testData)
		if err != nil {
			return fmt.Errorf("--test-data: %w", err)
		}
		scfg.Evaluator = server.TestSetEvaluator{Models: models, Data: test}
	}
	srv, err := server.New(ctx, scfg)
	if err != nil {
		return err
	}
	reg.MustRegister(srv.MetricsCollector(), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fedge_transport_shed_total",
		Help: "Messages the coordinator's MQTT client acknowledged and discarded on a full queue (the inbox drains it, so this stays 0 unless the coordinator is starved of CPU).",
	}, func() float64 { return float64(tr.Shed()) }))
	adminCreds, err := admin.OpenCredentials(filepath.Join(f.data, admin.CredentialsFile))
	if err != nil {
		return err
	}
	h, err := admin.NewHandler(srv, admin.Options{Token: token, Credentials: adminCreds, Gatherer: reg, Log: log.Named("admin"), Health: srv.AdminHealth})
	if err != nil {
		return err
	}
	var adminTLS *tls.Config
	if f.adminCert != "" {
		if adminTLS, err = tlsutil.ServerConfig(f.adminCert, f.adminKey, f.adminClientCA); err != nil {
			return fmt.Errorf("admin TLS: %w", err)
		}
	}
	ln, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	scheme := "http://"
	if adminTLS != nil {
		// Only TLS on this port: a plain HTTP request gets the standard
		// library's 400 and never reaches a handler.
		ln, scheme = tls.NewListener(ln, adminTLS), "https://"
	} else if tcpAddr, ok := ln.Addr().(*net.TCPAddr); ok && !tcpAddr.IP.IsLoopback() {
		log.Warn("admin API and console on a non-loopback address without TLS: credentials cross the network in clear; give --admin-tls-cert and --admin-tls-key",
			zap.String("admin", ln.Addr().String()))
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server", zap.Error(err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("coordinator started", zap.String("fleet", f.fleet), zap.String("broker", mcfg.BrokerURL),
		zap.String("admin", scheme+ln.Addr().String()), zap.String("console", scheme+ln.Addr().String()+"/console/"), zap.String("public_key", server.PublicKeyHex(key)),
		zap.String("data", f.data))
	return srv.Run(ctx)
}

// startBroker starts the embedded broker with the stored device
// credentials and a fresh coordinator secret.
func startBroker(f serveFlags, creds *registry.CredentialFile, log *zap.Logger) (*broker.Broker, *broker.Credentials, string, string, error) {
	bc := broker.NewCredentials()
	if err := creds.Install(bc, f.fleet); err != nil {
		return nil, nil, "", "", err
	}
	secret, password, err := broker.GenerateSecret()
	if err != nil {
		return nil, nil, "", "", err
	}
	if err := bc.Add(topics.CoordinatorUser, secret, topics.Identity{Role: topics.RoleCoordinator, Fleet: f.fleet}); err != nil {
		return nil, nil, "", "", err
	}
	tcp := f.listen
	if tcp == "" {
		// TLS for devices only: the coordinator itself connects over a
		// loopback listener on a free port.
		tcp = "127.0.0.1:0"
	}
	cfg := broker.Config{Fleet: f.fleet, TCPAddr: tcp, TLSAddr: f.tlsListen, Credentials: bc}
	if f.tlsListen != "" {
		var tc *tls.Config
		if tc, err = tlsutil.ServerConfig(f.tlsCert, f.tlsKey, f.tlsClientCA); err != nil {
			return nil, nil, "", "", fmt.Errorf("broker TLS: %w", err)
		}
		cfg.TLS = tc
	}
	b, err := broker.New(cfg, log.Named("broker"))
	if err != nil {
		return nil, nil, "", "", err
	}
	if err := b.Start(); err != nil {
		return nil, nil, "", "", err
	}
	return b, bc, "tcp://" + b.TCPAddr(), password, nil
}

// parseBytes reads a size such as 512MiB, 1GiB, 300MB or 1048576.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	num, mul := s, int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mul = v, u.mul
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("%q is not a size like 512MiB", s)
	}
	return n * mul, nil
}
