package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/broker/mosquitto"
	"github.com/fedge-dev/fedge/internal/mosquittotest"
	"github.com/fedge-dev/fedge/internal/topics"
)

func TestBrokerConfigUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"broker-config"},
		{"broker-config", "rabbitmq", "--out", dir},
		{"broker-config", "mosquitto"},
		{"broker-config", "mosquitto", "--out", dir, "--tls-cert", "x.pem"},
		{"broker-config", "mosquitto", "--out", dir, "extra"},
		{"broker-config", "mosquitto", "--out", dir, "--data", filepath.Join(dir, "d"), "--require-client-cert"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"broker-config", "mosquitto", "--out", dir, "--data", filepath.Join(dir, "d"), "--fleet", "a/b"}, &out, &errb); code != 1 {
		t.Errorf("bad fleet: exit %d", code)
	}
	if code := run([]string{"broker-config", "mosquitto", "--out", dir, "--data", filepath.Join(dir, "d"), "--listen", "0.0.0.0:99999"}, &out, &errb); code != 1 {
		t.Errorf("bad port: exit %d", code)
	}
}

// TestBrokerConfigFiles: broker-config writes a TLS-only configuration,
// the coordinator's account and the devices recorded by `devices add`, and
// keeps the coordinator's password and the generated CA across runs.
func TestBrokerConfigFiles(t *testing.T) {
	dir := t.TempDir()
	data, out := filepath.Join(dir, "data"), filepath.Join(dir, "out")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	if err := externalDeviceAccount(&w, data, "dev-7"); err != nil {
		t.Fatal(err)
	}
	pw := regexp.MustCompile(`broker password:  (\S+)`).FindStringSubmatch(w.String())
	if pw == nil || !strings.Contains(w.String(), "broker-config mosquitto") {
		t.Fatalf("devices add output:\n%s", w.String())
	}
	args := []string{"broker-config", "mosquitto", "--data", data, "--out", out, "--fleet", "f1", "--listen", "127.0.0.1:8883"}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	conf, passwd, acl := read("mosquitto.conf"), read("passwd"), read("acl")
	ca := read("pki/ca.pem")
	coordPW, err := os.ReadFile(filepath.Join(data, CoordinatorBrokerPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"per_listener_settings false", "allow_anonymous false", "message_size_limit ", "max_queued_messages ",
		"persistence true", "listener 8883 127.0.0.1\ncafile ", "require_certificate false", "use_username_as_clientid true"} {
		if !strings.Contains(conf, want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Count(conf, "\nlistener ") != 1 || strings.Index(conf, "use_username_as_clientid") < strings.Index(conf, "\nlistener ") {
		t.Errorf("want one listener, with use_username_as_clientid after it:\n%s", conf)
	}
	hashes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(passwd), "\n") {
		name, hash, _ := strings.Cut(line, ":")
		hashes[name] = hash
	}
	for name, password := range map[string]string{"coordinator": strings.TrimSpace(string(coordPW)), "dev-7": pw[1]} {
		if ok, err := mosquitto.VerifyPassword(hashes[name], password); !ok || err != nil {
			t.Errorf("password file entry of %s does not verify: %v\n%s", name, err, passwd)
		}
	}
	if len(hashes) != 2 || !strings.Contains(acl, "user dev-7\n") || !strings.Contains(acl, "topic write fedge/v1/f1/dev/dev-7/out/+/#") {
		t.Errorf("passwd %v, acl:\n%s", hashes, acl)
	}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr.String())
	}
	again, _ := os.ReadFile(filepath.Join(data, CoordinatorBrokerPasswordFile))
	if string(again) != string(coordPW) || read("pki/ca.pem") != ca {
		t.Fatal("second run changed the coordinator password or the CA")
	}
}

var secretLine = regexp.MustCompile(`(?m)^\s*(broker password|enrollment token):\s+(\S+)$`)

// TestExternalMosquittoFromBrokerConfig is the README's external-broker
// walkthrough run as an operator would: broker-config writes Mosquitto's
// files, a real mosquitto runs them (TLS, ACLs) on a loopback port, the
// coordinator and two agents are separate processes, devices are added
// with `devices add` (which prints their broker passwords) and the broker
// reloaded; then a round of mlp trains. A device named like the
// coordinator's client id is refused by `devices add`.
func TestExternalMosquittoFromBrokerConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mf := startMosquittoFleet(t, ctx)
	f := mf.testFleet

	// A device may not be named like the coordinator's client id.
	var refused bytes.Buffer
	cmd := exec.Command(f.coord, append([]string{"devices", "add", "coordinator-itest"}, f.adminFlags...)...)
	cmd.Stdout, cmd.Stderr = &refused, &refused
	if err := cmd.Run(); err == nil || !strings.Contains(refused.String(), "reserved") {
		t.Fatalf("devices add coordinator-itest: %v\n%s", err, refused.String())
	}

	const n = 2
	ids := []string{"dev-0", "dev-1"}
	secrets := mf.addDevices(t, ids...)
	for i, id := range ids {
		mf.startAgent(t, id, secrets[id], fmt.Sprintf("mnist:%s?part=%d/%d", f.mnist, i, 10))
	}
	mf.waitOnline(t, ctx, n)
	st := f.train(t, 1, n, "--model", "mlp", "--rounds", "1", "--min-clients", "2", "--server-eval", "--lr", "0.1", "--deadline", "3m")
	if acc := st.History[0].ServerAccuracy; acc < 0.5 {
		t.Fatalf("accuracy after one round %.4f", acc)
	}
	if strings.Contains(mf.mq.Log(), "port 1883") {
		t.Fatalf("Mosquitto opened a plain listener:\n%s", mf.mq.Log())
	}
	t.Logf("external Mosquitto fleet: one round in %v", time.Since(f.start).Round(time.Millisecond))
}

// mosquittoFleet is a coordinator daemon using a real Mosquitto set up, as
// the README says, from `broker-config mosquitto`'s files only.
type mosquittoFleet struct {
	*testFleet
	mq       *mosquittotest.Instance
	url, ca  string
	out      string
	listen   string
	userFlag string
}

// startMosquittoFleet builds the binaries, writes Mosquitto's files with
// broker-config, starts Mosquitto (TLS, ACLs) and the coordinator on it.
func startMosquittoFleet(t *testing.T, ctx context.Context, serveArgs ...string) *mosquittoFleet {
	t.Helper()
	mosquittotest.Require(t)
	f := &testFleet{start: time.Now()}
	bins := t.TempDir()
	f.coord = goBuild(t, bins, "./cmd/coordinator")
	f.agentBin = goBuild(t, bins, "./cmd/edgeagent")
	f.mnist = mnistDir(t)
	f.dir = t.TempDir()
	f.data = filepath.Join(f.dir, "coordinator")
	mf := &mosquittoFleet{testFleet: f, out: filepath.Join(f.dir, "mosquitto"), userFlag: "mosquitto"}
	if os.Geteuid() == 0 {
		mf.userFlag = "root" // the files are in the test's private temporary directory
	}
	if err := os.MkdirAll(mf.out, 0o750); err != nil {
		t.Fatal(err)
	}
	mf.mq = mosquittotest.StartGenerated(t, mf.out, true, func(port int, _ string) (string, error) {
		mf.listen = fmt.Sprintf("127.0.0.1:%d", port)
		mf.brokerConfig(t)
		b, err := os.ReadFile(filepath.Join(mf.out, "mosquitto.conf"))
		return string(b), err
	})
	mf.ca = filepath.Join(mf.out, "pki", "ca.pem")
	mf.url = "ssl://" + mf.listen

	adminAddr := freeAddr(t)
	f.coordProc = startProc(t, filepath.Join(f.dir, "coordinator.log"), f.coord, append([]string{"serve", "--data", f.data, "--fleet", "itest",
		"--admin", adminAddr, "--test-data", f.mnist, "--log-format", "console", "--tick", "200ms",
		"--broker", mf.url, "--broker-user", "coordinator", "--broker-password-file", filepath.Join(f.data, CoordinatorBrokerPasswordFile),
		"--broker-ca", mf.ca}, serveArgs...)...)
	f.adminFlags = []string{"--admin", adminAddr, "--data", f.data}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tok, err := os.ReadFile(filepath.Join(f.data, "admin.token"))
		if err == nil {
			f.c = &admin.Client{BaseURL: "http://" + adminAddr, Token: strings.TrimSpace(string(tok))}
			if _, err = f.c.Status(ctx); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator not up: %v\n%s", err, mf.mq.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.key = strings.TrimSpace(cli(t, f.coord, "key", "--data", f.data))
	return mf
}

func (mf *mosquittoFleet) brokerConfig(t *testing.T) {
	t.Helper()
	cli(t, mf.coord, "broker-config", "mosquitto", "--data", mf.data, "--out", mf.out, "--fleet", "itest",
		"--listen", mf.listen, "--user", mf.userFlag, "--log-file", filepath.Join(mf.out, "mosquitto.log"))
}

// addDevices runs `devices add` for each id (external mode prints the
// broker password), regenerates Mosquitto's files and reloads it; it
// returns each device's broker password and enrollment token.
func (mf *mosquittoFleet) addDevices(t *testing.T, ids ...string) map[string][2]string {
	t.Helper()
	secrets := map[string][2]string{}
	for _, id := range ids {
		outp := mf.cli(t, "devices", "add", id)
		m := secretLine.FindAllStringSubmatch(outp, -1)
		got := map[string]string{}
		for _, x := range m {
			got[x[1]] = x[2]
		}
		if got["broker password"] == "" || got["enrollment token"] == "" || !strings.Contains(outp, "broker-config mosquitto") {
			t.Fatalf("devices add %s in external mode:\n%s", id, outp)
		}
		secrets[id] = [2]string{got["broker password"], got["enrollment token"]}
	}
	reloads := strings.Count(mf.mq.Log(), "Reloading config")
	mf.brokerConfig(t)
	mf.mq.Signal(t, syscall.SIGHUP)
	waitLog := time.Now().Add(10 * time.Second)
	for strings.Count(mf.mq.Log(), "Reloading config") == reloads {
		if time.Now().After(waitLog) {
			t.Fatalf("mosquitto did not reload:\n%s", mf.mq.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return secrets
}

// startAgent starts an edgeagent process for id on Mosquitto.
func (mf *mosquittoFleet) startAgent(t *testing.T, id string, secret [2]string, data string) {
	t.Helper()
	startProc(t, filepath.Join(mf.dir, id+".log"), mf.agentBin, "run", "--fleet", "itest", "--device-id", id,
		"--enrollment-token", secret[1], "--coordinator-key", mf.key,
		"--data", data, "--storage", filepath.Join(mf.dir, id), "--predict-listen", "off", "--log-format", "console",
		"--broker", mf.url, "--username", id, "--password", secret[0], "--ca-file", mf.ca)
}

// waitOnline waits until n devices are online.
func (f *testFleet) waitOnline(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		st, err := f.c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.DevicesOnline == n {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d devices online", st.DevicesOnline, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestEmbeddedBrokerMetrics: the coordinator's /metrics exposes the
// embedded broker's counters, rate-limited publishes included.
func TestEmbeddedBrokerMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, brokerAddr := startEmbeddedFleet(t, ctx)
	res, err := f.c.AddDevice(ctx, "dev-m")
	if err != nil {
		t.Fatal(err)
	}
	// A device flooding its status: the first DefaultDevicePublishBurst
	// pass, the rest are dropped and counted.
	c, err := acltest.TryConnect(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).
		SetUsername(res.Username).SetPassword(res.Password).SetClientID("dev-m"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	// The bucket refills while the flood goes out (slowly under -race on a
	// busy machine), so what must be dropped depends on how long it took.
	topic := topics.DeviceOut("itest", "dev-m", "flood")
	const flood = broker.DefaultDevicePublishBurst + 5000
	start := time.Now()
	for range flood {
		c.Publish(topic, 0, false, []byte("x"))
	}
	if tok := c.Publish(topic, 1, false, []byte("x")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	refill := int(broker.DefaultDevicePublishRate*time.Since(start).Seconds()) + 1
	wantDropped := max(1, flood+1-broker.DefaultDevicePublishBurst-refill)
	req, _ := http.NewRequestWithContext(ctx, "GET", f.c.BaseURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+f.c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^fedge_broker_rate_limited_total (\d+)`).FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("/metrics %d has no fedge_broker_rate_limited_total:\n%.2000s", resp.StatusCode, body)
	}
	if n, _ := strconv.Atoi(string(m[1])); n < wantDropped {
		t.Fatalf("fedge_broker_rate_limited_total %d, want at least %d (%d sent, burst %d, %d refilled meanwhile)",
			n, wantDropped, flood+1, broker.DefaultDevicePublishBurst, refill)
	}
	if !bytes.Contains(body, []byte("fedge_broker_connects_accepted_total")) {
		t.Fatal("/metrics lacks the broker's connection counters")
	}
}
