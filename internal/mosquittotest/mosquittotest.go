// Package mosquittotest runs a real Mosquitto broker (Debian's mosquitto
// 2.0) for tests: a generated configuration listening on a free loopback
// port, a hashed password file, an ACL file generated from the fedge policy
// (topics.Allowed), optional TLS and mTLS with certificates from tlsutil, and
// persistence in the test's temporary directory so Restart keeps sessions.
//
// When the mosquitto binary is missing, Start skips the test, or fails it if
// the environment variable FEDGE_REQUIRE_EXTERNAL is set (as CI does); under
// -short it skips the test whatever is installed.
package mosquittotest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/topics"
)

// RequireEnv is the environment variable that turns a missing Mosquitto
// into a test failure instead of a skip.
const RequireEnv = "FEDGE_REQUIRE_EXTERNAL"

// MissingHint is the message given when the binary is missing.
const MissingHint = "mosquitto not installed; run `make deps` (apt-get install mosquitto)"

// Paths searched for the binaries when they are not on PATH.
var (
	brokerPaths = []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"}
	passwdPaths = []string{"/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"}
)

// User is a broker account.
type User struct {
	Name     string // MQTT user name; for devices use the device id
	Password string // plain password (no ':' or line breaks)
	Identity topics.Identity
}

// Options configure an Instance.
type Options struct {
	// Fleet is filled into users whose Identity.Fleet is empty.
	Fleet string
	Users []User
	// TLS makes the listener TLS-only ("ssl://" URL).
	TLS bool
	// RequireClientCert demands a client certificate signed by the
	// instance's CA (mTLS); the password is still checked. Implies TLS.
	RequireClientCert bool
	// CertIdentity makes the client certificate's CN the user name
	// (Mosquitto's use_identity_as_username): no password is needed and the
	// MQTT user name sent is ignored. Implies RequireClientCert.
	CertIdentity bool
	// MaxPayload, if positive, is Mosquitto's message_size_limit: larger
	// publishes are dropped.
	MaxPayload int
	// MaxQueued is max_queued_messages per client (default 10000, enough
	// for a 10 MiB blob in small chunks to a disconnected client).
	MaxQueued int
}

// Instance is a running (or stopped) Mosquitto.
type Instance struct {
	opts  Options
	dir   string
	conf  string
	log   string
	port  int
	pki   *tlsutil.Files
	bin   string
	cmd   *exec.Cmd
	done  chan error // receives cmd.Wait's result once
	users map[string]User
}

// Available reports whether the mosquitto and mosquitto_passwd binaries can
// be found.
func Available() error {
	if _, err := brokerBinary(); err != nil {
		return err
	}
	_, err := passwdBinary()
	return err
}

func find(name string, fallbacks []string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %v: %s", name, fallbacks, MissingHint)
}

func brokerBinary() (string, error) { return find("mosquitto", brokerPaths) }
func passwdBinary() (string, error) { return find("mosquitto_passwd", passwdPaths) }

// Require skips t (or fails it when FEDGE_REQUIRE_EXTERNAL is set) if
// Mosquitto is not installed. Under -short (make test-short) it skips t
// always: the Mosquitto suites are among the slow ones make test runs.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("Mosquitto suite: skipped under -short (make test-short); make test runs it")
	}
	if err := Available(); err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%v (%s is set, so this is a failure)", err, RequireEnv)
			return
		}
		t.Skipf("%v; set %s=1 to make this a failure", err, RequireEnv)
	}
}

// Start generates the configuration and starts Mosquitto, returning once it
// accepts TCP connections. The broker is stopped by t.Cleanup.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	Require(t)
	inst, err := setup(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
	t.Cleanup(func() { _ = inst.stop() })
	// A free port can be taken by someone else between our probe and
	// Mosquitto's bind; retry with a new port in that case.
	for attempt := 1; ; attempt++ {
		err = inst.start()
		if err == nil {
			return inst
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("mosquittotest: %v", err)
		}
		if inst.port, err = freePort(); err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
		if err := inst.writeConfig(); err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
	}
}

func setup(dir string, opts Options) (*Instance, error) {
	bin, err := brokerBinary()
	if err != nil {
		return nil, err
	}
	if opts.CertIdentity {
		opts.RequireClientCert = true
	}
	if opts.RequireClientCert {
		opts.TLS = true
	}
	if opts.MaxQueued == 0 {
		opts.MaxQueued = 10000
	}
	opts.Users = append([]User(nil), opts.Users...) // filled in below; keep the caller's slice
	users := map[string]User{}
	var names []string
	for i, u := range opts.Users {
		if u.Identity.Fleet == "" {
			u.Identity.Fleet = opts.Fleet
		}
		if u.Identity.Role == topics.RoleCoordinator && u.Identity.ID == "" {
			u.Identity.ID = u.Name
		}
		if err := validateUser(u); err != nil {
			return nil, err
		}
		if _, dup := users[u.Name]; dup {
			return nil, fmt.Errorf("user %q listed twice", u.Name)
		}
		opts.Users[i] = u
		users[u.Name] = u
		names = append(names, u.Name)
	}
	inst := &Instance{
		opts:  opts,
		dir:   dir,
		conf:  filepath.Join(dir, "mosquitto.conf"),
		log:   filepath.Join(dir, "mosquitto.log"),
		bin:   bin,
		users: users,
	}
	if opts.TLS {
		if inst.pki, err = tlsutil.WritePKI(filepath.Join(dir, "pki"), nil, names...); err != nil {
			return nil, fmt.Errorf("generate certificates: %w", err)
		}
	}
	if err := inst.writeAuthFiles(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("create persistence dir: %w", err)
	}
	if inst.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := inst.writeConfig(); err != nil {
		return nil, err
	}
	return inst, nil
}

func (i *Instance) writeAuthFiles() error {
	acl, err := ACLFile(i.opts.Users)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(i.dir, "acl"), []byte(acl), 0o644); err != nil {
		return fmt.Errorf("write ACL file: %w", err)
	}
	var pw strings.Builder
	for _, u := range i.opts.Users {
		fmt.Fprintf(&pw, "%s:%s\n", u.Name, u.Password)
	}
	pwFile := filepath.Join(i.dir, "passwd")
	if err := os.WriteFile(pwFile, []byte(pw.String()), 0o600); err != nil {
		return fmt.Errorf("write password file: %w", err)
	}
	if len(i.opts.Users) == 0 {
		return nil
	}
	bin, err := passwdBinary()
	if err != nil {
		return err
	}
	// -U hashes every plain password of the file in place (PBKDF2-SHA512).
	if out, err := exec.Command(bin, "-U", pwFile).CombinedOutput(); err != nil {
		return fmt.Errorf("mosquitto_passwd -U: %w: %s", err, out)
	}
	return nil
}

// Config returns the generated mosquitto.conf (for debugging and tests).
func (i *Instance) Config() string {
	b, _ := os.ReadFile(i.conf)
	return string(b)
}

func (i *Instance) writeConfig() error {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# generated by internal/mosquittotest")
	if os.Geteuid() == 0 {
		// As root, Mosquitto would drop to user "mosquitto", which cannot
		// read the test's private temporary directory.
		w("user root")
	}
	w("per_listener_settings false")
	w("allow_anonymous false")
	w("password_file %s", filepath.Join(i.dir, "passwd"))
	w("acl_file %s", filepath.Join(i.dir, "acl"))
	w("persistence true")
	w("persistence_location %s/", filepath.Join(i.dir, "data"))
	w("log_dest file %s", i.log)
	for _, lt := range []string{"error", "warning", "notice", "information"} {
		w("log_type %s", lt)
	}
	w("connection_messages true")
	w("max_queued_messages %d", i.opts.MaxQueued)
	if i.opts.MaxPayload > 0 {
		w("message_size_limit %d", i.opts.MaxPayload)
	}
	w("listener %d 127.0.0.1", i.port)
	if i.opts.TLS {
		w("cafile %s", i.pki.CA)
		w("certfile %s", i.pki.ServerCert)
		w("keyfile %s", i.pki.ServerKey)
		w("tls_version tlsv1.2")
		w("require_certificate %t", i.opts.RequireClientCert)
		w("use_identity_as_username %t", i.opts.CertIdentity)
	}
	if err := os.WriteFile(i.conf, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches the process and waits until the port accepts connections.
func (i *Instance) start() error {
	if i.cmd != nil {
		return errors.New("already running")
	}
	logf, err := os.OpenFile(i.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	cmd := exec.Command(i.bin, "-c", i.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", i.bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	i.cmd, i.done = cmd, done

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", i.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-done:
			i.cmd, i.done = nil, nil
			return fmt.Errorf("mosquitto exited during startup (%v); log:\n%s", werr, i.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = i.stop()
			return fmt.Errorf("mosquitto did not listen on %s within 10s; log:\n%s", i.Addr(), i.Log())
		}
	}
}

// stop terminates the process (SIGTERM, which makes Mosquitto save its
// persistence file; SIGKILL after 5s) and waits for it.
func (i *Instance) stop() error {
	if i.cmd == nil {
		return nil
	}
	cmd, done := i.cmd, i.done
	i.cmd, i.done = nil, nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("mosquitto ignored SIGTERM for 5s and was killed")
	}
}

// Stop stops the broker; Restart starts it again.
func (i *Instance) Stop(t testing.TB) {
	t.Helper()
	if err := i.stop(); err != nil {
		t.Fatalf("mosquittotest: stop: %v", err)
	}
}

// Restart stops the broker and starts it again on the same port with the
// same configuration and persistence file, so persistent sessions, queued
// QoS 1 messages and retained messages survive.
func (i *Instance) Restart(t testing.TB) {
	t.Helper()
	i.Stop(t)
	if err := i.start(); err != nil {
		t.Fatalf("mosquittotest: restart: %v", err)
	}
}

// Addr is the listener's "127.0.0.1:port".
func (i *Instance) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(i.port)) }

// URL is the broker URL for paho: "ssl://127.0.0.1:port" with TLS,
// "tcp://127.0.0.1:port" otherwise.
func (i *Instance) URL() string {
	if i.opts.TLS {
		return "ssl://" + i.Addr()
	}
	return "tcp://" + i.Addr()
}

// TLSConfig returns the client TLS configuration for user: the instance's
// CA, plus the user's client certificate when the broker requires one. It
// returns nil when the instance does not use TLS.
func (i *Instance) TLSConfig(user string) *tls.Config {
	if !i.opts.TLS {
		return nil
	}
	cn := ""
	if i.opts.RequireClientCert {
		cn = user
	}
	cfg, err := i.pki.ClientConfig(cn)
	if err != nil {
		// Unknown users get a config without certificate, so tests can
		// check that the broker refuses them.
		cfg, err = i.pki.ClientConfig("")
	}
	if err != nil {
		panic(fmt.Sprintf("mosquittotest: client TLS config of generated PKI: %v", err))
	}
	return cfg
}

// PKI returns the generated certificate files (nil without TLS).
func (i *Instance) PKI() *tlsutil.Files { return i.pki }

// User returns a configured account.
func (i *Instance) User(name string) (User, bool) {
	u, ok := i.users[name]
	return u, ok
}

// Log returns Mosquitto's log so far.
func (i *Instance) Log() string {
	b, err := os.ReadFile(i.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}
