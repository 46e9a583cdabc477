package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/edgeagent/predict"
)

// withCustomSection appends a WebAssembly custom section to a module: the
// module stays valid and behaves the same, but its bytes (and hash) differ
// from every module built into the binaries.
func withCustomSection(wasm []byte, name string, payload []byte) []byte {
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append([]byte{}, wasm...)
	out = append(out, 0) // custom section id
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}

// TestUserModel is acceptance 4 of the rounds issue with real processes: a
// model module the binaries do not contain (the Go-built logreg of
// wasm-models/go, given a custom section so its hash is new) is added with
// `models add`, trained for two rounds by three agents that receive it over
// MQTT, serves predictions on an agent, and is rolled back with `models
// rollback`; the agent installs the rolled-back version.
func TestUserModel(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f, brokerAddr := startEmbeddedFleet(t, ctx)

	src, err := os.ReadFile("../../wasm-models/gologreg.wasm")
	if err != nil {
		t.Fatal(err)
	}
	user := filepath.Join(t.TempDir(), "mynet.wasm")
	if err := os.WriteFile(user, withCustomSection(src, "fedge.test", []byte("a user's model")), 0o644); err != nil {
		t.Fatal(err)
	}
	out := f.cli(t, "models", "add", "mynet", user)
	if !strings.Contains(out, "mynet") {
		t.Fatalf("models add: %s", out)
	}
	mods, err := f.c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mod *admin.ModuleDoc
	for i := range mods.Modules {
		if mods.Modules[i].Name == "mynet" {
			mod = &mods.Modules[i]
		}
	}
	if mod == nil || mod.Builtin || mod.Classes != 10 || mod.Params != 7850 {
		t.Fatalf("mynet module: %+v", mod)
	}

	predictAddr := freeAddr(t)
	const n = 3
	f.addAgents(t, ctx, n, func(id string, res *admin.AddDeviceResult) []string {
		args := []string{"--broker", "tcp://" + brokerAddr, "--username", res.Username, "--password", res.Password}
		if id == "dev-0" {
			args = append(args, "--predict-listen", predictAddr)
		}
		return args
	})
	st := f.train(t, 2, n, "--model", "mynet", "--rounds", "2", "--min-clients", strconv.Itoa(n),
		"--server-eval", "--lr", "0.05", "--epochs", "1", "--batch-size", "10", "--deadline", "3m")
	if st.Run.Model != "mynet" {
		t.Fatalf("run %+v", st.Run)
	}
	if a := st.History[1].ServerAccuracy; a < 0.85 {
		t.Fatalf("mynet reached %.4f test accuracy after 2 rounds, want at least 0.85", a)
	}
	trained := st.History[1].ModelVersion

	// The agent serves the trained user model locally.
	waitVersion := func(want uint64) predict.Response {
		t.Helper()
		body, _ := json.Marshal(predict.Request{Inputs: [][]float64{make([]float64, 784)}})
		for {
			var pr predict.Response
			resp, err := http.Post("http://"+predictAddr+"/v1/predict", "application/json", bytes.NewReader(body))
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&pr)
				resp.Body.Close()
			}
			if err == nil && pr.ModelVersion == want {
				if len(pr.Predictions) != 1 || len(pr.Predictions[0].Scores) != 10 {
					t.Fatalf("prediction %+v", pr)
				}
				return pr
			}
			if ctx.Err() != nil {
				t.Fatalf("agent never served version %d (last %+v, %v)", want, pr, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitVersion(trained)

	// Roll back to the first trained version: a new version with its weights
	// is signed, published and installed by the agents.
	first := st.History[0].ModelVersion
	out = f.cli(t, "models", "rollback", strconv.FormatUint(first, 10))
	mods, err = f.c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	latest := mods.Versions[len(mods.Versions)-1]
	for _, v := range mods.Versions {
		if v.Version > latest.Version {
			latest = v
		}
	}
	var firstDoc admin.VersionDoc
	for _, v := range mods.Versions {
		if v.Version == first {
			firstDoc = v
		}
	}
	if latest.Version <= trained || latest.ParentVersion != first || latest.WeightsHash != firstDoc.WeightsHash || latest.Model != "mynet" {
		t.Fatalf("rollback to %d: %s\nlatest version %+v, version %d %+v", first, out, latest, first, firstDoc)
	}
	waitVersion(latest.Version)
	t.Logf("rolled back to version %d's weights as version %d; the agent serves it", first, latest.Version)
}
