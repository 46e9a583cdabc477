package predict

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
	wasmmodels "github.com/fedge-dev/fedge/wasm-models"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// install puts logreg with random weights (seeded) into s as version v.
func install(t testing.TB, host *runtime.Host, s agent.ModelStore, v uint64, seed uint64) []float32 {
	t.Helper()
	wasm := wasmmodels.MustGet("logreg").Wasm
	mod, err := host.Compile(context.Background(), wasm)
	must(t, err)
	in, err := mod.Instantiate(context.Background(), runtime.Options{MaxBatch: 1})
	must(t, err)
	n := in.Metadata().Params
	_ = in.Close(context.Background())
	r := rand.New(rand.NewPCG(seed, 0))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.1)
	}
	wb := agent.EncodeWeights(w)
	wh, gh := sha256.Sum256(wasm), sha256.Sum256(wb)
	m := &fedgepb.ModelManifest{ModelId: "logreg", Version: v, WasmHash: wh[:], WasmLength: uint64(len(wasm)),
		WeightsHash: gh[:], WeightsLength: uint64(len(wb)), ParamCount: uint64(n)}
	must(t, s.Install(agent.Model{Manifest: m, Wasm: wasm, Weights: wb}))
	return w
}

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server, *agent.MemoryModelStore, *runtime.Host) {
	t.Helper()
	host, err := runtime.NewHost(context.Background(), runtime.Config{})
	must(t, err)
	t.Cleanup(func() { _ = host.Close(context.Background()) })
	store := agent.NewMemoryModelStore()
	cfg.Host, cfg.Models = host, store
	s, err := New(cfg)
	must(t, err)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, hs, store, host
}

func post(t *testing.T, c *http.Client, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	var out map[string]any
	must(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func rows(n, dim int, v float64) string {
	row := strings.TrimSuffix(strings.Repeat(fmt.Sprint(v)+",", dim), ",")
	rs := make([]string, n)
	for i := range rs {
		rs[i] = "[" + row + "]"
	}
	return `{"inputs":[` + strings.Join(rs, ",") + `]}`
}

func TestPredict(t *testing.T) {
	_, hs, store, host := newTestServer(t, Config{MaxRows: 4, MaxBodyBytes: 32 << 10})
	url := hs.URL + "/v1/predict"
	if code, out := post(t, hs.Client(), url, rows(1, 784, 0.5)); code != http.StatusServiceUnavailable || out["error"] == nil {
		t.Fatalf("no model: %d %v", code, out)
	}
	install(t, host, store, 1, 1)

	// Reference scores from the runtime directly.
	m, err := agent.ActiveModel(store)
	must(t, err)
	mod, err := host.Compile(context.Background(), m.Wasm)
	must(t, err)
	ref, err := mod.Instantiate(context.Background(), runtime.Options{})
	must(t, err)
	defer ref.Close(context.Background())
	w, _ := agent.DecodeWeights(m.Weights)
	must(t, ref.SetParams(context.Background(), w))
	x := make([]float32, 2*784)
	for i := range x {
		x[i] = float32(i%7) / 7
	}
	want, err := ref.Predict(context.Background(), x)
	must(t, err)
	body, _ := json.Marshal(map[string]any{"inputs": [][]float32{x[:784], x[784:]}})
	resp, err := hs.Client().Post(url, "application/json", strings.NewReader(string(body)))
	must(t, err)
	var got Response
	must(t, json.NewDecoder(resp.Body).Decode(&got))
	resp.Body.Close()
	if resp.StatusCode != 200 || got.ModelVersion != 1 || len(got.Predictions) != 2 {
		t.Fatalf("response %d %+v", resp.StatusCode, got)
	}
	for i, p := range got.Predictions {
		best := 0
		for j, s := range p.Scores {
			if s != want[i*10+j] {
				t.Fatalf("row %d score %d = %v, runtime says %v", i, j, s, want[i*10+j])
			}
			if s > p.Scores[best] {
				best = j
			}
		}
		if p.Class != best {
			t.Fatalf("row %d class %d, argmax %d", i, p.Class, best)
		}
	}

	bad := map[string]struct {
		body string
		code int
		msg  string
	}{
		"wrong length":   {rows(1, 783, 0.5), 400, "783 values"},
		"too many rows":  {rows(5, 784, 0.5), 400, "at most 4"},
		"no rows":        {`{"inputs":[]}`, 400, "no inputs"},
		"NaN literal":    {`{"inputs":[[NaN]]}`, 400, "invalid character"},
		"float32 range":  {rows(1, 784, 1e39), 400, "finite"},
		"unknown field":  {`{"input":[[1]]}`, 400, "unknown field"},
		"trailing data":  {rows(1, 784, 0.5) + "{}", 400, "trailing"},
		"not json":       {"hello", 400, "invalid character"},
		"too large body": {rows(4, 784, 0.123456789), 413, "over"},
	}
	for name, tc := range bad {
		code, out := post(t, hs.Client(), url, tc.body)
		if code != tc.code || !strings.Contains(fmt.Sprint(out["error"]), tc.msg) {
			t.Errorf("%s: %d %v, want %d mentioning %q", name, code, out, tc.code, tc.msg)
		}
	}
	r2, err := hs.Client().Get(url)
	must(t, err)
	r2.Body.Close()
	if r2.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", r2.StatusCode)
	}

	// A new active version is picked up.
	install(t, host, store, 2, 2)
	if code, out := post(t, hs.Client(), url, rows(1, 784, 0.5)); code != 200 || out["model_version"] != float64(2) {
		t.Fatalf("after v2: %d %v", code, out)
	}
}

func TestServeUnixSocket(t *testing.T) {
	s, _, store, host := newTestServer(t, Config{})
	install(t, host, store, 3, 3)
	sock := filepath.Join(t.TempDir(), "predict.sock")
	ln, err := Listen("unix:" + sock)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	if code, out := post(t, c, "http://unix/v1/predict", rows(2, 784, 0.1)); code != 200 || out["model_version"] != float64(3) {
		t.Fatalf("unix socket: %d %v", code, out)
	}
	cancel()
	must(t, <-done)
}

func TestListenRejectsNonLocal(t *testing.T) {
	for _, a := range []string{"0.0.0.0:8750", "10.1.2.3:80", "off", "unix:", "nohost"} {
		if ln, err := Listen(a); err == nil {
			ln.Close()
			t.Errorf("%q accepted", a)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	must(t, err)
	ln.Close()
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{rows(1, 4, 0.5), rows(3, 4, -1), `{"inputs":[]}`, `{"inputs":[[1,2,3]]}`,
		`{"inputs":[[1e39,0,0,0]]}`, `{"x":1}`, `[]`, `{"inputs":[[1,2,3,4]]} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, n, err := DecodeRequest(b, 4, 8)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if n < 1 || n > 8 || len(x) != 4*n {
			t.Fatalf("accepted %d rows with %d values", n, len(x))
		}
	})
}
