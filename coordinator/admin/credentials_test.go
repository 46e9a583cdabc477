package admin

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/internal/tlsutil"
)

func newCredServer(t *testing.T, api API) (*httptest.Server, *Credentials) {
	t.Helper()
	creds, err := OpenCredentials(filepath.Join(t.TempDir(), CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(api, Options{Token: testToken, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, creds
}

// TestRoles: each role reaches what it may and gets a 403 naming the role
// it lacks elsewhere; the audit actor is the credential's owner.
func TestRoles(t *testing.T) {
	api := &fakeAPI{}
	srv, creds := newCredServer(t, api)
	tok := map[string]string{}
	for _, n := range []string{"vera", "otto", "ada"} {
		role := map[string]Role{"vera": RoleViewer, "otto": RoleOperator, "ada": RoleAdmin}[n]
		tk, err := creds.Add(n, role, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tk, tokenPrefix) || len(tk) < 40 {
			t.Fatalf("token %q", tk)
		}
		tok[n] = tk
	}
	type call struct{ method, path, ctype, body string }
	read := call{"GET", "/v1/rounds/status", "", ""}
	start := call{"POST", "/v1/rounds", "application/json", `{"model":"mlp"}`}
	addDev := call{"POST", "/v1/devices", "application/json", `{"device_id":"d1"}`}
	for _, c := range []struct {
		who    string
		call   call
		status int
	}{
		{"vera", read, 200}, {"vera", start, 403}, {"vera", addDev, 403},
		{"otto", read, 200}, {"otto", start, 200}, {"otto", addDev, 403},
		{"ada", read, 200}, {"ada", start, 200}, {"ada", addDev, 200},
	} {
		status, body := do(t, c.call.method, srv.URL+c.call.path, tok[c.who], c.call.ctype, c.call.body)
		if status != c.status {
			t.Fatalf("%s %s %s: %d %s, want %d", c.who, c.call.method, c.call.path, status, body, c.status)
		}
		if status == 403 && !strings.Contains(body, `credential \"`+c.who+`\" has role`) {
			t.Fatalf("403 body %q does not name the credential and its role", body)
		}
	}
	// The actor is the owner, whatever X-Fedge-Actor claims.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/rounds", strings.NewReader(`{"model":"mlp"}`))
	req.Header.Set("Authorization", "Bearer "+tok["otto"])
	req.Header.Set("X-Fedge-Actor", "somebody-else")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if api.lastActor != "cred:otto" {
		t.Fatalf("actor %q, want cred:otto", api.lastActor)
	}
	// The shared token stays an admin credential with its old actor form.
	c := &Client{BaseURL: srv.URL, Token: testToken, Actor: "alice"}
	if _, err := c.AddDevice(t.Context(), "d2"); err != nil {
		t.Fatal(err)
	}
	status, body := do(t, "GET", srv.URL+"/v1/whoami", tok["vera"], "", "")
	if status != 200 || !strings.Contains(body, `"name": "vera"`) || !strings.Contains(body, `"role": "viewer"`) {
		t.Fatalf("whoami: %d %s", status, body)
	}
	status, body = do(t, "GET", srv.URL+"/v1/whoami", testToken, "", "")
	if status != 200 || !strings.Contains(body, `"role": "admin"`) || !strings.Contains(body, `"shared": true`) {
		t.Fatalf("whoami shared: %d %s", status, body)
	}
}

// TestRevocation: a revoked credential is refused on the next request,
// also when another process (the CLI) revoked it in the file.
func TestRevocation(t *testing.T) {
	srv, creds := newCredServer(t, &fakeAPI{})
	tk, err := creds.Add("otto", RoleOperator, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s, b := do(t, "GET", srv.URL+"/v1/rounds", tk, "", ""); s != 200 {
		t.Fatalf("%d %s", s, b)
	}
	other, err := OpenCredentials(creds.path) // as the CLI would
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke("otto", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s, b := do(t, "GET", srv.URL+"/v1/rounds", tk, "", ""); s != 401 || !strings.Contains(b, "revoked") {
		t.Fatalf("revoked credential: %d %s", s, b)
	}
	if err := other.Revoke("otto", time.Now()); err == nil {
		t.Fatal("revoked twice")
	}
	// A new credential for the same name has a new token.
	tk2, err := other.Add("otto", RoleViewer, time.Now())
	if err != nil || tk2 == tk {
		t.Fatalf("re-add: %v", err)
	}
	if s, _ := do(t, "GET", srv.URL+"/v1/rounds", tk2, "", ""); s != 200 {
		t.Fatalf("re-added credential: %d", s)
	}
	// The file holds hashes only.
	raw, err := os.ReadFile(creds.path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), tk2[len(tokenPrefix):]) {
		t.Fatal("token stored in clear")
	}
	if fi, _ := os.Stat(creds.path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A corrupt file fails closed for per-admin credentials; the shared
	// token still works.
	if err := os.WriteFile(creds.path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, _ := do(t, "GET", srv.URL+"/v1/rounds", tk2, "", ""); s != 401 {
		t.Fatalf("corrupt file: %d", s)
	}
	if s, _ := do(t, "GET", srv.URL+"/v1/rounds", testToken, "", ""); s != 200 {
		t.Fatalf("shared token with corrupt file: %d", s)
	}
}

func TestCredentialValidation(t *testing.T) {
	creds, err := OpenCredentials(filepath.Join(t.TempDir(), CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"", "admin", "-x", "a b", strings.Repeat("x", 65), "é"} {
		if _, err := creds.Add(n, RoleViewer, time.Now()); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	if _, err := creds.Add("ok", Role(9), time.Now()); err == nil {
		t.Error("role 9 accepted")
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("role root parsed")
	}
	if _, ok := creds.Lookup("fedge_adm_nothing"); ok {
		t.Error("unknown token accepted")
	}
	bad := filepath.Join(t.TempDir(), "x.json")
	for _, body := range []string{`{"credentials":[{"name":"a","role":"god","token_sha256":"00"}]}`, `{"credentials":[{"name":"a","role":"viewer","token_sha256":"zz"}]}`, `{"extra":1}`} {
		if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenCredentials(bad); err == nil {
			t.Errorf("file %s accepted", body)
		}
	}
}

// TestConsoleServed: the console's files come from the binary, open (they
// hold no data), with a strict content security policy.
func TestConsoleServed(t *testing.T) {
	srv := newTestServer(t, &fakeAPI{})
	for path, want := range map[string]string{"/console/": "<title>fedge console</title>", "/console/app.js": "sessionStorage", "/console/style.css": "@media"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(b.String(), want) {
			t.Fatalf("%s: %d, missing %q", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Fatalf("%s: CSP %q", path, csp)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("/: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestTLSRefusesPlainHTTP: a handler behind a TLS listener answers HTTPS
// and refuses plain HTTP before any handler runs.
func TestTLSRefusesPlainHTTP(t *testing.T) {
	pki, err := tlsutil.WritePKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlsutil.ServerConfig(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(&fakeAPI{}, Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	plain := "http://" + strings.TrimPrefix(srv.URL, "https://")
	status, body := do(t, "GET", plain+"/v1/rounds/status", testToken, "", "")
	if status != 400 || strings.Contains(body, StatusSchema) {
		t.Fatalf("plain HTTP: %d %q", status, body)
	}
	pool, err := tlsutil.LoadPool(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{BaseURL: srv.URL, Token: testToken, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	if st, err := c.Status(t.Context()); err != nil || st.Schema != StatusSchema {
		t.Fatalf("HTTPS: %v", err)
	}
}

// FuzzCredentialsFile: whatever the admins file holds, opening it and
// looking tokens up never panics, a file that loads lists only valid
// names and roles, and a broken file accepts no credential.
func FuzzCredentialsFile(f *testing.F) {
	f.Add([]byte(`{"credentials":[{"name":"alice","role":"viewer","token_sha256":"` + strings.Repeat("ab", 32) + `"}]}`))
	f.Add([]byte(`{"credentials":[{"name":"","role":"root","token_sha256":"zz"}]}`))
	f.Add([]byte(`{"credentials":null,"extra":1}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		path := filepath.Join(t.TempDir(), CredentialsFile)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCredentials(path)
		if err != nil {
			return
		}
		infos, lerr := c.List()
		if _, ok := c.Lookup("fedge_adm_" + strings.Repeat("0", 64)); ok && lerr != nil {
			t.Fatal("a credential accepted from a file that does not load")
		}
		for _, in := range infos {
			if validName(in.Name) != nil {
				t.Fatalf("listed invalid name %q", in.Name)
			}
			if _, err := ParseRole(in.Role); err != nil {
				t.Fatalf("listed invalid role %q", in.Role)
			}
		}
	})
}
