package agent

import (
	"bufio"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/transport/memory"
)

// Environment of the child process of TestAgentKilledMidway.
const (
	envCrashMode = "FEDGE_AGENT_CRASH_CHILD"
	envCrashDir  = "FEDGE_AGENT_CRASH_DIR"
	envCrashKey  = "FEDGE_AGENT_CRASH_KEY"
	crashRound   = 21
)

// crashDevice builds a device on the persistent stores in dir.
func crashDevice(t *testing.T, c *fakeCoordinator, dir string) *device {
	t.Helper()
	state, err := OpenBadgerStore(filepath.Join(dir, "state"))
	must(t, err)
	t.Cleanup(func() { _ = state.Close() })
	models, err := OpenDirModelStore(filepath.Join(dir, "models"), c.pub)
	must(t, err)
	key, err := LoadOrCreateKey(filepath.Join(dir, "device.key"))
	must(t, err)
	host := newHost(t)
	wasm, weights := logregModel(t, host)
	c.model(1, wasm, weights)
	d := newDevice(t, c, host, "dev-crash", synthetic(t, 3000, 9), func(o *Options) {
		o.Key, o.State, o.Models = key, state, models
	})
	c.mu.Lock()
	c.devKeys[d.id] = key.Public().(ed25519.PublicKey)
	c.mu.Unlock()
	return d
}

// TestAgentKilledMidway kills an agent process (this test binary re-run as
// a child) with SIGKILL, once after it published its update but before the
// ack, once as soon as its task is persisted (mid-training), then restarts
// the agent on the same storage: the update must be (re-)sent and accepted
// exactly once, under a single message id.
func TestAgentKilledMidway(t *testing.T) {
	if mode := os.Getenv(envCrashMode); mode != "" {
		crashChild(t, mode)
		return
	}
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	for _, mode := range []string{"published", "task"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			_, ckey, _ := ed25519.GenerateKey(nil)
			cmd := exec.Command(os.Args[0], "-test.run=^TestAgentKilledMidway$", "-test.timeout=2m")
			cmd.Env = append(os.Environ(), envCrashMode+"="+mode, envCrashDir+"="+dir, envCrashKey+"="+hex.EncodeToString(ckey.Seed()))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			must(t, err)
			must(t, cmd.Start())
			var childID string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "CRASHPOINT "); ok {
					childID = id
					break
				}
			}
			must(t, cmd.Process.Kill())
			_ = cmd.Wait()
			if childID == "" {
				t.Fatal("child exited before reaching its crash point")
			}

			bus := memory.NewBus(memory.Config{}, nil)
			c := newFakeCoordinatorKey(t, bus, ckey)
			dev := crashDevice(t, c, dir)
			if dev.activeVersion() != 1 {
				t.Fatalf("installed model lost: active v%d", dev.activeVersion())
			}
			dev.start(t, bus)
			eventually(t, "update acked after restart", func() bool { return dev.agent.Stats().Acked == 1 })
			ups := c.updatesFor(crashRound)
			ids := map[string]bool{}
			for _, u := range ups {
				ids[hex.EncodeToString(u.MessageID)] = true
			}
			if len(ids) != 1 {
				t.Fatalf("%d distinct updates for round %d, want 1", len(ids), crashRound)
			}
			if mode == "published" && !ids[childID] {
				t.Fatalf("restarted agent sent %v, the killed one had published %s", ids, childID)
			}
			if mode == "published" && dev.agent.Stats().TasksRun != 0 {
				t.Fatal("round retrained after restart although its update was persisted")
			}
			t.Logf("mode %s: tasks run after restart %d", mode, dev.agent.Stats().TasksRun)
			if ps, _ := dev.state.Pending(); len(ps) != 0 {
				t.Fatalf("%d pending after ack", len(ps))
			}
			if tk, _ := dev.state.Task(); tk != nil {
				t.Fatal("task still persisted after ack")
			}
			// Another delivery of the same task is not trained again.
			c.sendTask(dev.id, trainTask(crashRound, c.lastManifest, 3))
			eventually(t, "done round ignored", func() bool { return dev.agent.Stats().Ignored["task"] == 1 })
		})
	}
}

// crashChild runs the agent until its crash point, prints it and waits to
// be killed.
func crashChild(t *testing.T, mode string) {
	seed, err := hex.DecodeString(os.Getenv(envCrashKey))
	must(t, err)
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinatorKey(t, bus, ed25519.NewKeyFromSeed(seed))
	c.autoAck = false
	dev := crashDevice(t, c, os.Getenv(envCrashDir))
	c.announce(c.lastManifest)
	dev.start(t, bus)
	eventually(t, "model installed", func() bool { return dev.activeVersion() == 1 })
	task := trainTask(crashRound, c.lastManifest, 3)
	task.Train.Epochs = 3
	c.sendTask(dev.id, task)
	switch mode {
	case "published":
		eventually(t, "update published", func() bool { return len(c.updatesFor(crashRound)) > 0 })
		fmt.Printf("CRASHPOINT %x\n", c.updatesFor(crashRound)[0].MessageID)
	default:
		eventually(t, "task persisted", func() bool { tk, _ := dev.state.Task(); return tk != nil })
		fmt.Println("CRASHPOINT task")
	}
	time.Sleep(time.Minute) // killed by the parent
	t.Error("child not killed")
}
