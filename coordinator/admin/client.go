package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls the admin API.
type Client struct {
	// BaseURL is e.g. "http://127.0.0.1:8080".
	BaseURL string
	Token   string
	// Actor is sent as X-Fedge-Actor for the audit log (optional).
	Actor string
	HTTP  *http.Client
}

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("admin api: %d: %s", e.Status, e.Message) }

// maxResponse bounds a response body read by the client.
const maxResponse = 64 << 20

func (c *Client) call(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("admin api %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Actor != "" {
		req.Header.Set("X-Fedge-Actor", c.Actor)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin api %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("admin api %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorDoc
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin api %s %s: decode response: %w", method, path, err)
	}
	return nil
}

func (c *Client) callJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin api: encode request: %w", err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.call(ctx, method, path, body, ct, out)
}

// StartRun starts a run.
func (c *Client) StartRun(ctx context.Context, req StartRequest) (*RunDoc, error) {
	var out RunDoc
	return &out, c.callJSON(ctx, http.MethodPost, "/v1/rounds", req, &out)
}

// StopRun stops the active run.
func (c *Client) StopRun(ctx context.Context, reason string) (*RunDoc, error) {
	var out RunDoc
	return &out, c.callJSON(ctx, http.MethodPost, "/v1/rounds/stop", stopRequest{Reason: reason}, &out)
}

// Status returns the round status document.
func (c *Client) Status(ctx context.Context) (*StatusDoc, error) {
	var out StatusDoc
	return &out, c.callJSON(ctx, http.MethodGet, "/v1/rounds/status", nil, &out)
}

// StatusRaw returns the status document exactly as served.
func (c *Client) StatusRaw(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.callJSON(ctx, http.MethodGet, "/v1/rounds/status", nil, &out)
}

// Runs lists the runs.
func (c *Client) Runs(ctx context.Context) ([]RunDoc, error) {
	var out []RunDoc
	return out, c.callJSON(ctx, http.MethodGet, "/v1/rounds", nil, &out)
}

// Models lists modules and versions.
func (c *Client) Models(ctx context.Context) (*ModelsDoc, error) {
	var out ModelsDoc
	return &out, c.callJSON(ctx, http.MethodGet, "/v1/models", nil, &out)
}

// AddModel uploads a module.
func (c *Client) AddModel(ctx context.Context, name string, wasm []byte) (*ModuleDoc, error) {
	var out ModuleDoc
	return &out, c.call(ctx, http.MethodPut, "/v1/models/"+url.PathEscape(name), bytes.NewReader(wasm), "application/wasm", &out)
}

// Rollback publishes a new version with the weights of version.
func (c *Client) Rollback(ctx context.Context, version uint64) (*VersionDoc, error) {
	var out VersionDoc
	return &out, c.callJSON(ctx, http.MethodPost, "/v1/models/rollback", rollbackRequest{Version: version}, &out)
}

// Devices lists devices.
func (c *Client) Devices(ctx context.Context) ([]DeviceDoc, error) {
	var out []DeviceDoc
	return out, c.callJSON(ctx, http.MethodGet, "/v1/devices", nil, &out)
}

// AddDevice registers a device and returns its credentials.
func (c *Client) AddDevice(ctx context.Context, id string) (*AddDeviceResult, error) {
	var out AddDeviceResult
	return &out, c.callJSON(ctx, http.MethodPost, "/v1/devices", addDeviceRequest{DeviceID: id}, &out)
}

// ApproveDevice approves a pending device.
func (c *Client) ApproveDevice(ctx context.Context, id string) (*DeviceDoc, error) {
	var out DeviceDoc
	return &out, c.callJSON(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/approve", nil, &out)
}

// Audit lists audit entries after seq.
func (c *Client) Audit(ctx context.Context, after uint64, limit int) ([]AuditDoc, error) {
	var out []AuditDoc
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}
	return out, c.callJSON(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &out)
}

// PublicKey returns the coordinator's public key (hex).
func (c *Client) PublicKey(ctx context.Context) (string, error) {
	var out map[string]string
	if err := c.callJSON(ctx, http.MethodGet, "/v1/key", nil, &out); err != nil {
		return "", err
	}
	return out["public_key"], nil
}
