// Package predict is the edge agent's local inference API for on-device
// applications: POST /v1/predict with a JSON batch of inputs returns the
// class scores of the active global model. It listens on a loopback TCP
// port or a unix socket only.
//
//	POST /v1/predict  {"inputs": [[...784 floats...], ...]}
//	-> 200 {"model_version": 7, "predictions": [{"class": 3, "scores": [...]}]}
//
// Errors are JSON {"error": "..."}: 400 for a malformed body, a row of the
// wrong length, a non-finite value or too many rows; 413 for a body over
// the size limit; 503 while no model is installed.
package predict

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/edgeagent/agent"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
)

// Defaults of Config.
const (
	DefaultMaxRows      = 256
	DefaultMaxBodyBytes = 16 << 20
)

// ErrBadRequest is wrapped by every request decoding error.
var ErrBadRequest = errors.New("bad predict request")

// Config configures a Server. Host and Models are required.
type Config struct {
	Host   *runtime.Host
	Models agent.ModelStore
	Log    *zap.Logger
	// MaxRows bounds the inputs of one request (default 256).
	MaxRows int
	// MaxBodyBytes bounds the request body (default 16 MiB).
	MaxBodyBytes int64
}

// Server answers predictions with the active model. One instance of the
// model is kept and replaced when the active version changes; requests are
// served one at a time on it.
type Server struct {
	cfg Config
	log *zap.Logger

	mu      sync.Mutex
	version uint64
	inst    *runtime.Instance
}

// New returns a server; it loads the model on the first request.
func New(cfg Config) (*Server, error) {
	if cfg.Host == nil || cfg.Models == nil {
		return nil, errors.New("predict: host and model store are required")
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Server{cfg: cfg, log: cfg.Log}, nil
}

// Request is the body of POST /v1/predict.
type Request struct {
	Inputs [][]float64 `json:"inputs"`
}

// Prediction is one row's result: the most likely class and all scores.
type Prediction struct {
	Class  int       `json:"class"`
	Scores []float32 `json:"scores"`
}

// Response is the body of a successful prediction.
type Response struct {
	ModelVersion uint64       `json:"model_version"`
	Predictions  []Prediction `json:"predictions"`
}

// DecodeRequest parses a request body into a row-major float32 matrix of
// rows x inputLen, checking JSON syntax (no unknown fields, one value),
// 1..maxRows rows, row lengths and that every value is finite as a
// float32.
func DecodeRequest(body []byte, inputLen, maxRows int) ([]float32, int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	n := len(req.Inputs)
	if n == 0 {
		return nil, 0, fmt.Errorf("%w: no inputs", ErrBadRequest)
	}
	if n > maxRows {
		return nil, 0, fmt.Errorf("%w: %d rows, at most %d per request", ErrBadRequest, n, maxRows)
	}
	x := make([]float32, 0, n*inputLen)
	for i, row := range req.Inputs {
		if len(row) != inputLen {
			return nil, 0, fmt.Errorf("%w: row %d has %d values, the model takes %d", ErrBadRequest, i, len(row), inputLen)
		}
		for j, v := range row {
			f := float32(v)
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return nil, 0, fmt.Errorf("%w: row %d value %d (%v) is not a finite float32", ErrBadRequest, i, j, v)
			}
			x = append(x, f)
		}
	}
	return x, n, nil
}

// instance returns the instance of the active model, replacing a stale one.
// Called with s.mu held.
func (s *Server) instance(ctx context.Context) (*runtime.Instance, error) {
	vs, err := s.cfg.Models.Versions()
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 {
		return nil, agent.ErrNoModel
	}
	if s.inst != nil && s.version == vs[0].Version {
		return s.inst, nil
	}
	m, err := s.cfg.Models.Load(vs[0].Version) // checks the bytes against the manifest
	if err != nil {
		return nil, err
	}
	if s.inst != nil {
		_ = s.inst.Close(ctx)
		s.inst = nil
	}
	mod, err := s.cfg.Host.Compile(ctx, m.Wasm)
	if err != nil {
		return nil, err
	}
	in, err := mod.Instantiate(ctx, runtime.Options{})
	if err != nil {
		return nil, err
	}
	w, err := agent.DecodeWeights(m.Weights)
	if err == nil {
		err = in.SetParams(ctx, w)
	}
	if err != nil {
		_ = in.Close(ctx)
		return nil, err
	}
	s.inst, s.version = in, m.Manifest.Version
	s.log.Info("inference model loaded", zap.Uint64("version", s.version))
	return in, nil
}

// Close releases the model instance.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inst == nil {
		return nil
	}
	err := s.inst.Close(ctx)
	s.inst = nil
	return err
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/predict", s.predict)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, errors.New("use POST"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("body over %d bytes", mb.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in, err := s.instance(r.Context())
	if errors.Is(err, agent.ErrNoModel) {
		writeError(w, http.StatusServiceUnavailable, errors.New("no model installed yet"))
		return
	}
	if err != nil {
		s.log.Error("load inference model", zap.Error(err))
		writeError(w, http.StatusInternalServerError, errors.New("model unavailable"))
		return
	}
	meta := in.Metadata()
	x, n, err := DecodeRequest(body, meta.InputLen(), s.cfg.MaxRows)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	scores, err := in.Predict(r.Context(), x)
	if err != nil {
		// The instance may be unusable after a failed call; load it again next time.
		_ = in.Close(r.Context())
		s.inst = nil
		s.log.Error("predict", zap.Error(err))
		writeError(w, http.StatusInternalServerError, errors.New("prediction failed"))
		return
	}
	k := meta.Classes
	resp := Response{ModelVersion: s.version, Predictions: make([]Prediction, n)}
	for i := range n {
		row := scores[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		resp.Predictions[i] = Prediction{Class: best, Scores: row}
	}
	writeJSON(w, http.StatusOK, resp)
}

// Listen opens addr: "unix:/path" (a stale socket file is replaced) or a
// loopback "host:port" (see agent.ValidateListen).
func Listen(addr string) (net.Listener, error) {
	if err := agent.ValidateListen(addr); err != nil || addr == "off" {
		return nil, fmt.Errorf("predict listen %q: invalid address: %v", addr, err)
	}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("predict listen: %w", err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("predict listen: %w", err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("predict listen: %w", err)
	}
	return ln, nil
}

// Serve serves the API on ln until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("predict server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("predict server shutdown: %w", err)
	}
	return nil
}
