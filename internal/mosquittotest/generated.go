package mosquittotest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StartGenerated starts Mosquitto with a configuration made elsewhere (the
// production generator, `coordinator broker-config`): render is given a
// free loopback port and the log file the instance reads, and returns the
// configuration text, which must listen on that port (with TLS when tls is
// set). It returns once the port accepts connections; t.Cleanup stops it.
func StartGenerated(t testing.TB, dir string, tls bool, render func(port int, logFile string) (string, error)) *Instance {
	t.Helper()
	Require(t)
	bin, err := brokerBinary()
	if err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
	inst := &Instance{
		opts: Options{TLS: tls},
		dir:  dir,
		conf: filepath.Join(dir, "mosquitto.conf"),
		log:  filepath.Join(dir, "mosquitto.log"),
		bin:  bin,
	}
	t.Cleanup(func() { _ = inst.stop() })
	for attempt := 1; ; attempt++ {
		if inst.port, err = freePort(); err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
		conf, err := render(inst.port, inst.log)
		if err != nil {
			t.Fatalf("mosquittotest: render config: %v", err)
		}
		if !strings.Contains(conf, fmt.Sprintf("listener %d ", inst.port)) && !strings.Contains(conf, fmt.Sprintf("listener %d\n", inst.port)) {
			t.Fatalf("mosquittotest: generated config does not listen on port %d:\n%s", inst.port, conf)
		}
		if err := os.WriteFile(inst.conf, []byte(conf), 0o644); err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
		err = inst.start()
		if err == nil {
			return inst
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("mosquittotest: %v", err)
		}
	}
}

// Signal sends sig to the running broker (SIGHUP reloads the password
// and ACL files).
func (i *Instance) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if i.cmd == nil {
		t.Fatal("mosquittotest: not running")
	}
	if err := i.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("mosquittotest: signal: %v", err)
	}
}
