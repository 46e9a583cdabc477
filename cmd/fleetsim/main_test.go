package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/data/datatest"
	"github.com/fedge-dev/fedge/simulations/scenarios"
)

func TestList(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"list"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, n := range scenarios.Names() {
		if !strings.Contains(out.String(), n) {
			t.Errorf("list lacks %s:\n%s", n, out.String())
		}
	}
	if !strings.Contains(out.String(), "10 devices, embedded MQTT broker") {
		t.Errorf("list lacks the descriptions:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"run"},
		{"run", "--scenario", "quickstart", "--transport", "pigeon"},
		{"run", "--scenario", "quickstart", "--clients", "0"},
		{"run", "--scenario", "quickstart", "extra"},
		{"run", "--bogus"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: error %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"run", "--scenario", "no/such/file.yaml"}, &out, &out); err == nil || errors.Is(err, errUsage) {
		t.Errorf("missing scenario file: %v", err)
	}
}

// TestRunScenarioFile runs a tiny fleet from a YAML file with overrides and
// checks what the command prints and writes.
func TestRunScenarioFile(t *testing.T) {
	if testing.Short() {
		t.Skip("long fleet run: skipped under -short (make test-short); make test runs it")
	}
	t.Setenv("FEDGE_MNIST_DIR", datatest.MNISTDir(t))
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.yaml")
	yaml := "name: tiny\nmodel: logreg\ntransport: broker\nclients: 5\nrounds: 5\ntest_samples: 1000\ntarget_accuracy: 0.5\n" +
		"selection: {fraction: 1, min_clients: 2}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"run", "--scenario", path, "--out", out, "--rounds", "2", "--clients", "3", "--transport", "memory", "--seed", "4"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"tiny: 3 devices over memory", "after 2 rounds", "reached in round", "summary: " + filepath.Join(out, "summary.json"), "accuracy.png"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "tiny 2/2") {
		t.Errorf("no progress shown:\n%s", stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil || !bytes.Contains(b, []byte(`"seed": 4`)) || !bytes.Contains(b, []byte(`"clients": 3`)) {
		t.Errorf("summary.json (%v):\n%s", err, b)
	}
}
