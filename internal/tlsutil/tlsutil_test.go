package tlsutil

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// handshake runs one TLS handshake over loopback and returns the client
// error, the server error and the CN of the client certificate the server
// verified ("" if none).
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config, addr string) (cliErr, srvErr error, cn string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err error
		cn  string
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		var r result
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 {
			r.cn = st.VerifiedChains[0][0].Subject.CommonName
		}
		_, _ = tc.Write([]byte("ok"))
		done <- r
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(addr, port), cliCfg)
	if err == nil {
		// With TLS 1.3 a rejected client certificate surfaces on the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2)
		_, err = io.ReadFull(conn, buf)
		conn.Close()
	}
	r := <-done
	return err, r.err, r.cn
}

func TestWritePKIAndHandshakes(t *testing.T) {
	dir := t.TempDir()
	f, err := WritePKI(dir, nil, "dev1", "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	other, err := WritePKI(filepath.Join(dir, "other"), nil, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(f.ClientKey["dev1"]); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode: %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(f.ServerKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("server key mode: %v %v", st.Mode(), err)
	}
	tlsOnly, err := f.ServerConfig(false)
	if err != nil {
		t.Fatal(err)
	}
	mtls, err := f.ServerConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := f.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	dev1, err := f.ClientConfig("dev1")
	if err != nil {
		t.Fatal(err)
	}
	foreignDev1, err := other.ClientConfig("dev1")
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, err := ClientConfig(other.CA, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		srv     *tls.Config
		cli     *tls.Config
		addr    string
		ok      bool
		wantCN  string
		srvFail bool
	}{
		{"tls ip", tlsOnly, anon, "127.0.0.1", true, "", false},
		{"tls localhost", tlsOnly, anon, "localhost", true, "", false},
		{"tls client cert not requested", tlsOnly, dev1, "127.0.0.1", true, "", false},
		{"server from foreign CA", tlsOnly, foreignCA, "127.0.0.1", false, "", false},
		{"mtls with client cert", mtls, dev1, "127.0.0.1", true, "dev1", false},
		{"mtls without client cert", mtls, anon, "127.0.0.1", false, "", true},
		{"mtls client cert from foreign CA", mtls, foreignDev1, "127.0.0.1", false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cliErr, srvErr, cn := handshake(t, tc.srv, tc.cli, tc.addr)
			if tc.ok {
				if cliErr != nil || srvErr != nil {
					t.Fatalf("handshake failed: client %v, server %v", cliErr, srvErr)
				}
				if cn != tc.wantCN {
					t.Fatalf("server saw CN %q, want %q", cn, tc.wantCN)
				}
				return
			}
			if cliErr == nil {
				t.Fatal("client handshake succeeded, want failure")
			}
			if tc.srvFail && srvErr == nil {
				t.Fatal("server accepted the client, want rejection")
			}
		})
	}
}

func TestIssueErrorsAndLoaders(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueClient(""); err == nil {
		t.Error("IssueClient(\"\") succeeded")
	}
	if _, err := ca.IssueServer("127.0.0.1", ""); err == nil {
		t.Error("IssueServer with empty host succeeded")
	}
	kp, err := ca.IssueServer("broker.example", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf == nil || c.Leaf.DNSNames[0] != "broker.example" || !c.Leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Fatalf("server names not in certificate: %+v", c.Leaf)
	}
	if err := c.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("not signed by the CA: %v", err)
	}

	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(junk); err == nil {
		t.Error("LoadPool accepted a file without certificates")
	}
	if _, err := LoadPool(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadPool(missing) = %v, want ErrNotExist", err)
	}
	if _, err := ServerConfig(junk, junk, ""); err == nil {
		t.Error("ServerConfig accepted junk")
	}
	f, err := WritePKI(dir, nil, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ClientConfig(f.CA, f.ClientCert["dev1"], "", ""); err == nil {
		t.Error("ClientConfig accepted a certificate without key")
	}
	if _, err := f.ClientConfig("nobody"); err == nil {
		t.Error("ClientConfig for an unknown CN succeeded")
	}
	if _, err := WritePKI(dir, nil, "../escape"); err == nil {
		t.Error("WritePKI accepted a path-like common name")
	}
}
