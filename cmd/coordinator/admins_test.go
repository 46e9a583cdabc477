package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/tlsutil"
)

func TestAdminsUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"admins"}, 2, "needs a subcommand"},
		{[]string{"admins", "frob"}, 2, "unknown command"},
		{[]string{"admins", "add", "--data", dir}, 2, "takes 1 argument"},
		{[]string{"admins", "add", "x", "--role", "root", "--data", dir}, 1, "want viewer, operator or admin"},
		{[]string{"admins", "add", "admin", "--data", dir}, 1, "reserved"},
		{[]string{"admins", "revoke", "nobody", "--data", dir}, 1, "no active credential"},
		{[]string{"serve", "--admin-tls-cert", "c.pem"}, 2, "go together"},
		{[]string{"serve", "--admin-tls-client-ca", "ca.pem"}, 2, "needs --admin-tls-cert"},
		{[]string{"round", "status", "--token", "t", "--admin", "http://127.0.0.1:1", "--admin-ca", "ca.pem"}, 2, "need an https://"},
		{[]string{"round", "status", "--token", "t", "--admin", "https://127.0.0.1:1", "--admin-cert", "c.pem"}, 2, "go together"},
	} {
		var out, errOut bytes.Buffer
		if got := run(c.args, &out, &errOut); got != c.status || !strings.Contains(out.String()+errOut.String(), c.out) {
			t.Errorf("%v: status %d, output %q; want %d containing %q", c.args, got, out.String()+errOut.String(), c.status, c.out)
		}
	}
	var out, errOut bytes.Buffer
	if run([]string{"admins", "add", "alice", "--role", "operator", "--data", dir}, &out, &errOut) != 0 {
		t.Fatal(errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	out.Reset()
	if run([]string{"admins", "list", "--data", dir}, &out, &errOut) != 0 || !strings.Contains(out.String(), "alice  operator") || strings.Contains(out.String(), tok) {
		t.Fatalf("list: %q", out.String())
	}
}

// TestAdminMTLS: with --admin-tls-client-ca the daemon's admin listener
// refuses a client without a certificate from that CA, and the CLI gets
// through with --admin-cert/--admin-key.
func TestAdminMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pki, err := tlsutil.WritePKI(filepath.Join(t.TempDir(), "pki"), nil, "ops")
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := pki.ClientConfig("ops")
	if err != nil {
		t.Fatal(err)
	}
	f := startFleetWith(t, ctx, []string{"--listen", freeAddr(t), "--admin-tls-cert", pki.ServerCert, "--admin-tls-key", pki.ServerKey,
		"--admin-tls-client-ca", pki.CA}, &adminTLS{caFile: pki.CA, cfg: withCert})
	noCert, err := pki.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	c := &admin.Client{BaseURL: f.c.BaseURL, Token: f.c.Token, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: noCert}}}
	if _, err := c.Status(ctx); err == nil {
		t.Fatal("admin API answered a client without a certificate")
	}
	out := f.cli(t, "round", "status", "--admin-cert", pki.ClientCert["ops"], "--admin-key", pki.ClientKey["ops"])
	if !strings.Contains(out, "no run yet") {
		t.Fatalf("round status over mTLS: %q", out)
	}
	var o, e bytes.Buffer
	if run(append([]string{"round", "status"}, f.adminFlags...), &o, &e) == 0 {
		t.Fatalf("CLI without a client certificate got through: %s", o.String())
	}
}
