package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport/transporttest"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

func TestCommands(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "edgeagent "+agent.Version) {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	if err := run(ctx, nil, &out, &errOut); err == nil {
		t.Fatal("no command accepted")
	}
	if err := run(ctx, []string{"bogus"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("bogus command: %v", err)
	}
	err := run(ctx, []string{"run", "--fleet", "f"}, &out, &errOut)
	if !errors.Is(err, agent.ErrConfig) || !strings.Contains(err.Error(), "device_id") {
		t.Fatalf("incomplete config: %v", err)
	}
	if err := run(ctx, []string{"run", "--config", "/no/such.yaml"}, &out, &errOut); err == nil {
		t.Fatal("missing config file accepted")
	}
}

func runKeygen(t *testing.T, dir string) ed25519.PublicKey {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keygen", "--storage", dir}, &out, &out); err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(b) != ed25519.PublicKeySize {
		t.Fatalf("keygen printed %q", out.String())
	}
	return b
}

func TestKeygenIsStable(t *testing.T) {
	dir := t.TempDir()
	if a, b := runKeygen(t, dir), runKeygen(t, dir); !a.Equal(b) {
		t.Fatal("keygen changed the key")
	}
}

// TestRunDaemon runs the daemon against the embedded broker: it must say
// hello signed with its key, serve the inference API on a unix socket
// (503 before any model) and stop cleanly when its context ends.
func TestRunDaemon(t *testing.T) {
	const fleet, id = "cmdtest", "dev-cmd"
	b := transporttest.StartEmbedded(t, transporttest.BrokerOptions{Fleet: fleet, Devices: []string{id}})
	coord := transporttest.Dial(t, b, topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}, "coordinator-"+fleet, nil)
	sub, err := coord.Subscribe(context.Background(), topics.DeviceOut(fleet, id, topics.KindStatus))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	devPub := runKeygen(t, storage)
	cpub, _, _ := ed25519.GenerateKey(nil)
	csv := filepath.Join(dir, "data.csv")
	if err := os.WriteFile(csv, []byte("0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := b.ClientConfig(topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet})
	sock := filepath.Join(dir, "p.sock")
	cfg := fmt.Sprintf("fleet: %s\ndevice_id: %s\nbroker:\n  url: %s\n  username: %s\n  password: %s\n"+
		"coordinator_key: %x\ndata: csv:%s?classes=2\nstorage_dir: %s\npredict_listen: unix:%s\nlog: {format: console, level: warn}\n",
		fleet, id, cc.BrokerURL, cc.Username, cc.Password, []byte(cpub), csv, storage, sock)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- run(ctx, []string{"run", "--config", cfgPath}, &logs, &logs) }()

	keys := wire.StaticKeys(map[string]ed25519.PublicKey{id: devPub})
	select {
	case m := <-sub.C():
		env, err := wire.Accept(m.Topic, m.Payload, wire.Limits{}, keys)
		if err != nil {
			t.Fatalf("hello: %v", err)
		}
		h, ok := env.Msg.(*fedgepb.Hello)
		if !ok || h.Capabilities.SampleCount != 3 {
			t.Fatalf("first status message %T %+v", env.Msg, env.Msg)
		}
	case err := <-done:
		t.Fatalf("daemon exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no hello")
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://agent/v1/predict", "application/json", strings.NewReader(`{"inputs":[[0.1,0.2]]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("predict without model: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
}
