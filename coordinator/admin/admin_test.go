package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const testToken = "0123456789abcdef-test-token"

// fakeAPI records calls and answers from canned values.
type fakeAPI struct {
	lastActor string
	lastStart StartRequest
	lastWasm  []byte
	err       error
}

func (f *fakeAPI) StartRun(_ context.Context, actor string, req StartRequest) (*RunDoc, error) {
	f.lastActor, f.lastStart = actor, req
	if f.err != nil {
		return nil, f.err
	}
	return &RunDoc{RunID: 7, State: "running", Model: req.Model}, nil
}
func (f *fakeAPI) StopRun(_ context.Context, actor, reason string) (*RunDoc, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &RunDoc{RunID: 7, State: "stopped", Reason: reason}, nil
}
func (f *fakeAPI) Status(context.Context) (*StatusDoc, error) {
	return &StatusDoc{Schema: StatusSchema, History: []HistoryEntry{}, Rejections: map[string]uint64{"replay": 2}}, f.err
}
func (f *fakeAPI) Runs(context.Context) ([]RunDoc, error) { return []RunDoc{{RunID: 1}}, f.err }
func (f *fakeAPI) Models(context.Context) (*ModelsDoc, error) {
	return &ModelsDoc{Modules: []ModuleDoc{{Name: "mlp"}}}, f.err
}
func (f *fakeAPI) AddModel(_ context.Context, actor, name string, wasm []byte) (*ModuleDoc, error) {
	f.lastWasm = wasm
	if f.err != nil {
		return nil, f.err
	}
	return &ModuleDoc{Name: name, Bytes: len(wasm)}, nil
}
func (f *fakeAPI) Rollback(_ context.Context, actor string, v uint64) (*VersionDoc, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &VersionDoc{Version: 9, ParentVersion: v}, nil
}
func (f *fakeAPI) Devices(context.Context) ([]DeviceDoc, error) {
	return []DeviceDoc{{DeviceID: "d"}}, f.err
}
func (f *fakeAPI) AddDevice(_ context.Context, actor, id string) (*AddDeviceResult, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &AddDeviceResult{DeviceID: id, Token: "tok"}, nil
}
func (f *fakeAPI) ApproveDevice(_ context.Context, actor, id string) (*DeviceDoc, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &DeviceDoc{DeviceID: id, State: "approved"}, nil
}
func (f *fakeAPI) Audit(_ context.Context, after uint64, limit int) ([]AuditDoc, error) {
	return []AuditDoc{{Seq: after + 1, Detail: fmt.Sprint(limit)}}, f.err
}
func (f *fakeAPI) PublicKey() string { return "abcd" }

func newTestServer(t *testing.T, api API) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "fedge_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	h, err := NewHandler(api, Options{Token: testToken, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, token, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHandlerAuthAndInput(t *testing.T) {
	srv := newTestServer(t, &fakeAPI{})
	cases := []struct {
		name, method, path, token, ctype, body string
		status                                 int
		contains                               string
	}{
		{"healthz is open", "GET", "/healthz", "", "", "", 200, "ok"},
		{"status needs a token", "GET", "/v1/rounds/status", "", "", "", 401, "bearer token"},
		{"wrong token", "GET", "/v1/rounds/status", "wrong-token-wrong-token", "", "", 401, "bearer token"},
		{"token prefix", "GET", "/v1/rounds/status", testToken[:10], "", "", 401, ""},
		{"metrics need a token", "GET", "/metrics", "", "", "", 401, ""},
		{"metrics", "GET", "/metrics", testToken, "", "", 200, "fedge_test_total 1"},
		{"status", "GET", "/v1/rounds/status", testToken, "", "", 200, StatusSchema},
		{"start", "POST", "/v1/rounds", testToken, "application/json", `{"model":"mlp","rounds":5}`, 200, `"run_id": 7`},
		{"start bad json", "POST", "/v1/rounds", testToken, "application/json", `{"model":`, 400, "decode body"},
		{"start unknown field", "POST", "/v1/rounds", testToken, "application/json", `{"modle":"mlp"}`, 400, "unknown field"},
		{"start wrong type", "POST", "/v1/rounds", testToken, "application/json", `{"rounds":"five"}`, 400, "decode body"},
		{"start trailing data", "POST", "/v1/rounds", testToken, "application/json", `{"model":"mlp"}{}`, 400, "trailing"},
		{"start wrong content type", "POST", "/v1/rounds", testToken, "text/plain", `{}`, 400, "content type"},
		{"start too large", "POST", "/v1/rounds", testToken, "application/json", `{"model":"` + strings.Repeat("x", MaxJSONBody) + `"}`, 400, "larger than"},
		{"wrong method", "DELETE", "/v1/rounds", testToken, "", "", 405, ""},
		{"unknown path", "GET", "/v1/nothing", testToken, "", "", 404, ""},
		{"stop", "POST", "/v1/rounds/stop", testToken, "application/json", `{"reason":"maintenance"}`, 200, "maintenance"},
		{"rollback needs a version", "POST", "/v1/models/rollback", testToken, "application/json", `{}`, 400, "version"},
		{"rollback", "POST", "/v1/models/rollback", testToken, "application/json", `{"version":3}`, 200, `"parent_version": 3`},
		{"add model", "PUT", "/v1/models/mine", testToken, "application/wasm", "\x00asm", 200, `"bytes": 4`},
		{"add empty model", "PUT", "/v1/models/mine", testToken, "application/wasm", "", 400, "empty"},
		{"devices", "GET", "/v1/devices", testToken, "", "", 200, `"device_id": "d"`},
		{"add device", "POST", "/v1/devices", testToken, "application/json", `{"device_id":"dev-1"}`, 200, `"enrollment_token": "tok"`},
		{"approve", "POST", "/v1/devices/dev-1/approve", testToken, "", "", 200, "approved"},
		{"audit", "GET", "/v1/audit?after=4&limit=10", testToken, "", "", 200, `"seq": 5`},
		{"audit bad after", "GET", "/v1/audit?after=x", testToken, "", "", 400, "after"},
		{"audit bad limit", "GET", "/v1/audit?limit=5000", testToken, "", "", 400, "limit"},
		{"key", "GET", "/v1/key", testToken, "", "", 200, "abcd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := do(t, c.method, srv.URL+c.path, c.token, c.ctype, c.body)
			if status != c.status || !strings.Contains(body, c.contains) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", c.method, c.path, status, body, c.status, c.contains)
			}
			if status >= 400 && status != 404 && status != 405 {
				var e errorDoc
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
					t.Fatalf("error body %q is not {\"error\": ...}", body)
				}
			}
		})
	}
}

func TestHandlerErrorStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: no", ErrBadRequest), 400},
		{fmt.Errorf("%w: no", ErrNotFound), 404},
		{fmt.Errorf("%w: no", ErrConflict), 409},
		{errors.New("disk on fire"), 500},
	} {
		srv := newTestServer(t, &fakeAPI{err: c.err})
		status, body := do(t, "POST", srv.URL+"/v1/rounds", testToken, "application/json", `{"model":"x"}`)
		if status != c.status || !strings.Contains(body, "no") && c.status != 500 {
			t.Fatalf("%v: %d %s", c.err, status, body)
		}
	}
}

func TestNewHandlerNeedsToken(t *testing.T) {
	if _, err := NewHandler(&fakeAPI{}, Options{Token: "short"}); err == nil {
		t.Fatal("short token accepted")
	}
}

func TestClient(t *testing.T) {
	api := &fakeAPI{}
	srv := newTestServer(t, api)
	c := &Client{BaseURL: srv.URL, Token: testToken, Actor: "alice"}
	ctx := context.Background()
	run, err := c.StartRun(ctx, StartRequest{Model: "mlp", Rounds: 5, Tags: map[string]string{"region": "eu"}})
	if err != nil || run.RunID != 7 || api.lastStart.Tags["region"] != "eu" || api.lastActor != "admin:alice" {
		t.Fatalf("start %+v %v %+v %q", run, err, api.lastStart, api.lastActor)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Rejections["replay"] != 2 {
		t.Fatalf("status %+v %v", st, err)
	}
	raw, err := c.StatusRaw(ctx)
	if err != nil || !json.Valid(raw) {
		t.Fatalf("raw status %s %v", raw, err)
	}
	if m, err := c.AddModel(ctx, "mine", []byte{0, 'a', 's', 'm', 1}); err != nil || m.Bytes != 5 || len(api.lastWasm) != 5 {
		t.Fatalf("add model %+v %v", m, err)
	}
	if v, err := c.Rollback(ctx, 2); err != nil || v.ParentVersion != 2 {
		t.Fatalf("rollback %+v %v", v, err)
	}
	if d, err := c.ApproveDevice(ctx, "dev-1"); err != nil || d.State != "approved" {
		t.Fatalf("approve %+v %v", d, err)
	}
	if k, err := c.PublicKey(ctx); err != nil || k != "abcd" {
		t.Fatalf("key %q %v", k, err)
	}
	bad := &Client{BaseURL: srv.URL, Token: "nope-nope-nope-nope"}
	var apiErr *APIError
	if _, err := bad.Runs(ctx); !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Fatalf("bad token: %v", err)
	}
}

// FuzzHandler feeds arbitrary bodies to every JSON endpoint: never a
// panic or a 5xx, and every 4xx carries a JSON error.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{`{"model":"mlp","rounds":5}`, `{}`, `{"version":1}`, `{"device_id":"d"}`, `{"reason":"x"}`,
		`{"model":`, `[]`, `null`, `{"rounds":-1}`, `{"tags":{"a":"b"}}`, "\x00\xff", `{"a":1}{"b":2}`} {
		f.Add(s)
	}
	h, err := NewHandler(&fakeAPI{}, Options{Token: testToken})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/rounds", "/v1/rounds/stop", "/v1/models/rollback", "/v1/devices"} {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code >= 500 {
				t.Fatalf("%s: %d %s", path, w.Code, w.Body)
			}
			if w.Code >= 400 {
				var e errorDoc
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
					t.Fatalf("%s: error body %q", path, w.Body)
				}
			}
		}
	})
}
