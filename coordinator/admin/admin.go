// Package admin is the coordinator's HTTP admin API: JSON endpoints for
// runs and rounds, models, devices and the audit log behind bearer
// credentials with roles (viewer, operator, admin; Credentials), plus
// Prometheus metrics, a health check and the web console (package
// console, served under /console/); and Client, which the coordinator CLI
// uses. The endpoints, roles and the stable status schema are documented
// in README.md.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/fedge-dev/fedge/coordinator/admin/console"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Request body limits.
const (
	MaxJSONBody = 1 << 20
	MaxWasmBody = 16 << 20
)

// Options configure the handler.
type Options struct {
	// Token is the shared admin token (DATA/admin.token): a credential
	// with the admin role, named "admin" in the audit log.
	Token string
	// Credentials are the per-admin credentials (nil: the shared token
	// only).
	Credentials *Credentials
	// Gatherer serves /metrics (nil: no /metrics).
	Gatherer prometheus.Gatherer
	Log      *zap.Logger
	// Health, if set, answers /healthz and /readyz (nil: always ok).
	Health func() HealthDoc
}

// NewHandler returns the admin API over api.
func NewHandler(api API, opts Options) (http.Handler, error) {
	if len(opts.Token) < 16 {
		return nil, errors.New("admin: token of at least 16 characters required")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	h := &handler{api: api, log: opts.Log, tokenSum: sha256.Sum256([]byte(opts.Token)), creds: opts.Credentials}
	mux := http.NewServeMux()
	cons := console.Handler()
	mux.Handle("GET /console/", cons)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: a coordinator still restoring its state is alive.
		var doc HealthDoc
		if opts.Health != nil {
			doc = opts.Health()
		}
		writeHealth(w, "ok", doc.Problems, !doc.Ready)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		doc := HealthDoc{Ready: true}
		if opts.Health != nil {
			doc = opts.Health()
		}
		writeHealth(w, "ready", doc.Problems, false)
	})
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", h.auth(RoleViewer, promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}).ServeHTTP))
	}
	mux.Handle("GET /v1/whoami", h.auth(RoleViewer, h.whoami))
	mux.Handle("GET /v1/key", h.auth(RoleViewer, h.key))
	mux.Handle("POST /v1/rounds", h.auth(RoleOperator, h.startRun))
	mux.Handle("GET /v1/rounds", h.auth(RoleViewer, h.runs))
	mux.Handle("GET /v1/rounds/status", h.auth(RoleViewer, h.status))
	mux.Handle("POST /v1/rounds/stop", h.auth(RoleOperator, h.stopRun))
	mux.Handle("GET /v1/models", h.auth(RoleViewer, h.models))
	mux.Handle("POST /v1/models/rollback", h.auth(RoleOperator, h.rollback))
	mux.Handle("PUT /v1/models/{name}", h.auth(RoleAdmin, h.addModel))
	mux.Handle("GET /v1/devices", h.auth(RoleViewer, h.devices))
	mux.Handle("POST /v1/devices", h.auth(RoleAdmin, h.addDevice))
	mux.Handle("POST /v1/devices/{id}/approve", h.auth(RoleOperator, h.approve))
	mux.Handle("GET /v1/audit", h.auth(RoleViewer, h.audit))
	return mux, nil
}

// HealthDoc is what the coordinator reports to /healthz and /readyz.
type HealthDoc struct {
	Ready    bool     // restored and serving
	Problems []string // empty when healthy
}

// writeHealth answers 200 with word, or 503 with one problem a line. While
// starting, a liveness check ignores the "not serving yet" problem.
func writeHealth(w http.ResponseWriter, word string, problems []string, starting bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if starting && len(problems) <= 1 {
		problems = nil
	}
	if len(problems) == 0 {
		_, _ = io.WriteString(w, word+"\n")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "unhealthy\n")
	for _, p := range problems {
		_, _ = io.WriteString(w, "- "+p+"\n")
	}
}

type handler struct {
	api      API
	log      *zap.Logger
	tokenSum [32]byte
	creds    *Credentials
}

type principalKey struct{}

// principalOf is the caller authenticated by auth.
func principalOf(r *http.Request) Principal {
	p, _ := r.Context().Value(principalKey{}).(Principal)
	return p
}

// authenticate maps a bearer token to its principal: the shared token
// (compared in constant time over hashes, so its length does not leak
// either) or an unrevoked per-admin credential.
func (h *handler) authenticate(r *http.Request) (Principal, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return Principal{}, false
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1 {
		return Principal{Name: "admin", Role: RoleAdmin, Shared: true}, true
	}
	if h.creds != nil {
		return h.creds.Lookup(tok)
	}
	return Principal{}, false
}

// auth lets a request through if its credential has at least role.
func (h *handler) auth(role Role, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := h.authenticate(r)
		if !ok {
			if h.creds != nil {
				if err := h.creds.LoadError(); err != nil {
					h.log.Error("admin credentials file unreadable; per-admin credentials refused", zap.Error(err))
				}
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="fedge"`)
			writeError(w, http.StatusUnauthorized, "missing, wrong or revoked bearer token")
			return
		}
		if p.Role < role {
			writeError(w, http.StatusForbidden, fmt.Sprintf("credential %q has role %s; this needs %s", p.Name, p.Role, role))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// WhoAmI is GET /v1/whoami: the caller's credential.
type WhoAmI struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Shared bool   `json:"shared"`
}

func (h *handler) whoami(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	h.reply(w, r, WhoAmI{Name: p.Name, Role: p.Role.String(), Shared: p.Shared}, nil)
}

// actor names the caller in the audit log. A per-admin credential is
// named by its owner, "cred:NAME"; the shared token, which identifies
// nobody, keeps its old form: "admin:" and the X-Fedge-Actor header if
// that is a short printable name, else "admin".
func actor(r *http.Request) string {
	if p := principalOf(r); p.Name != "" && !p.Shared {
		return "cred:" + p.Name
	}
	a := r.Header.Get("X-Fedge-Actor")
	if a == "" || len(a) > 64 {
		return "admin"
	}
	for _, c := range a {
		if c < 0x21 || c > 0x7e {
			return "admin"
		}
	}
	return "admin:" + a
}

type errorDoc struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorDoc{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// reply writes v, or the error with the status its sentinel selects.
func (h *handler) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusInternalServerError {
		h.log.Error("admin request failed", zap.String("path", r.URL.Path), zap.Error(err))
	}
	writeError(w, status, err.Error())
}

// decode reads one JSON object of at most MaxJSONBody bytes, refusing
// unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("%w: content type %q, want application/json", ErrBadRequest, ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, MaxJSONBody)
		}
		return fmt.Errorf("%w: decode body: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	return nil
}

func (h *handler) key(w http.ResponseWriter, r *http.Request) {
	h.reply(w, r, map[string]string{"public_key": h.api.PublicKey()}, nil)
}

func (h *handler) startRun(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if err := decode(w, r, &req); err != nil {
		h.reply(w, r, nil, err)
		return
	}
	doc, err := h.api.StartRun(r.Context(), actor(r), req)
	h.reply(w, r, doc, err)
}

type stopRequest struct {
	Reason string `json:"reason"`
}

func (h *handler) stopRun(w http.ResponseWriter, r *http.Request) {
	var req stopRequest
	if err := decode(w, r, &req); err != nil {
		h.reply(w, r, nil, err)
		return
	}
	doc, err := h.api.StopRun(r.Context(), actor(r), req.Reason)
	h.reply(w, r, doc, err)
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	doc, err := h.api.Status(r.Context())
	h.reply(w, r, doc, err)
}

func (h *handler) runs(w http.ResponseWriter, r *http.Request) {
	doc, err := h.api.Runs(r.Context())
	h.reply(w, r, doc, err)
}

func (h *handler) models(w http.ResponseWriter, r *http.Request) {
	doc, err := h.api.Models(r.Context())
	h.reply(w, r, doc, err)
}

func (h *handler) addModel(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWasmBody))
	if err != nil {
		h.reply(w, r, nil, fmt.Errorf("%w: module body: %v (limit %d bytes)", ErrBadRequest, err, MaxWasmBody))
		return
	}
	if len(body) == 0 {
		h.reply(w, r, nil, fmt.Errorf("%w: empty module", ErrBadRequest))
		return
	}
	doc, err := h.api.AddModel(r.Context(), actor(r), r.PathValue("name"), body)
	h.reply(w, r, doc, err)
}

type rollbackRequest struct {
	Version uint64 `json:"version"`
}

func (h *handler) rollback(w http.ResponseWriter, r *http.Request) {
	var req rollbackRequest
	if err := decode(w, r, &req); err != nil {
		h.reply(w, r, nil, err)
		return
	}
	if req.Version == 0 {
		h.reply(w, r, nil, fmt.Errorf("%w: version is required", ErrBadRequest))
		return
	}
	doc, err := h.api.Rollback(r.Context(), actor(r), req.Version)
	h.reply(w, r, doc, err)
}

func (h *handler) devices(w http.ResponseWriter, r *http.Request) {
	doc, err := h.api.Devices(r.Context())
	h.reply(w, r, doc, err)
}

type addDeviceRequest struct {
	DeviceID string `json:"device_id"`
}

func (h *handler) addDevice(w http.ResponseWriter, r *http.Request) {
	var req addDeviceRequest
	if err := decode(w, r, &req); err != nil {
		h.reply(w, r, nil, err)
		return
	}
	doc, err := h.api.AddDevice(r.Context(), actor(r), req.DeviceID)
	h.reply(w, r, doc, err)
}

func (h *handler) approve(w http.ResponseWriter, r *http.Request) {
	doc, err := h.api.ApproveDevice(r.Context(), actor(r), r.PathValue("id"))
	h.reply(w, r, doc, err)
}

func (h *handler) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, limit := uint64(0), 100
	var err error
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			h.reply(w, r, nil, fmt.Errorf("%w: after=%q is not a number", ErrBadRequest, v))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			h.reply(w, r, nil, fmt.Errorf("%w: limit=%q not in 1..1000", ErrBadRequest, v))
			return
		}
	}
	doc, err := h.api.Audit(r.Context(), after, limit)
	h.reply(w, r, doc, err)
}
