package tlsutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type pemSeed struct {
	name string
	data []byte
	ok   bool
}

// certSeeds are good and bad certificate PEM inputs for the table test and
// the fuzz corpus.
func certSeeds(t testing.TB) []pemSeed {
	ca, err := NewCA("seed CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("dev1")
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(ca.Cert.Raw)
	corrupt[10] ^= 0xff
	return []pemSeed{
		{"CA", ca.CertPEM, true},
		{"chain", append(bytes.Clone(leaf.CertPEM), ca.CertPEM...), true},
		{"key then certificate", append(bytes.Clone(leaf.KeyPEM), leaf.CertPEM...), true},
		{"empty", nil, false},
		{"not PEM", []byte("hello"), false},
		{"only a key", leaf.KeyPEM, false},
		{"truncated", ca.CertPEM[:len(ca.CertPEM)/2], false},
		{"corrupt DER", pemBlock("CERTIFICATE", corrupt), false},
		{"empty DER", pemBlock("CERTIFICATE", nil), false},
	}
}

// keySeeds are good and bad private key PEM inputs.
func keySeeds(t testing.TB) []pemSeed {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemBlock("PRIVATE KEY", der)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	return []pemSeed{
		{"pkcs8 ecdsa", pkcs8(ec), true},
		{"pkcs8 ed25519", pkcs8(ed), true},
		{"pkcs8 rsa", pkcs8(rsaKey), true},
		{"sec1 ecdsa", pemBlock("EC PRIVATE KEY", sec1), true},
		{"pkcs1 rsa", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), true},
		{"empty", nil, false},
		{"certificate only", certSeeds(t)[0].data, false},
		{"garbage DER", pemBlock("PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x00}), false},
		{"sec1 as pkcs8", pemBlock("PRIVATE KEY", sec1), false},
		{"truncated", pkcs8(ec)[:40], false},
	}
}

func TestParseCertificates(t *testing.T) {
	for _, s := range certSeeds(t) {
		certs, err := ParseCertificates(s.data)
		if (err == nil) != s.ok {
			t.Errorf("%s: error = %v, want ok = %v", s.name, err, s.ok)
		}
		if err == nil && len(certs) == 0 {
			t.Errorf("%s: no certificates and no error", s.name)
		}
	}
	if _, err := ParseCertificates([]byte("x")); !errors.Is(err, ErrNoPEM) {
		t.Errorf("no PEM: %v, want ErrNoPEM", err)
	}
}

func TestParsePrivateKey(t *testing.T) {
	for _, s := range keySeeds(t) {
		k, err := ParsePrivateKey(s.data)
		if (err == nil) != s.ok {
			t.Errorf("%s: error = %v, want ok = %v", s.name, err, s.ok)
		}
		if err == nil && k == nil {
			t.Errorf("%s: nil key and no error", s.name)
		}
	}
}

func FuzzParseCertificates(f *testing.F) {
	for _, s := range certSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	for _, s := range keySeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err == nil && (k == nil || k.Public() == nil) {
			t.Fatal("unusable key and no error")
		}
	})
}

func TestCARoundTrip(t *testing.T) {
	dir := t.TempDir()
	f, err := WritePKI(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(f.CAKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v", err)
	}
	ca, err := LoadCA(f.CA, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	// A client certificate issued later by the reloaded CA is trusted by a
	// server configured from the original files.
	kp, err := ca.IssueClient("late-device")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "late.pem"), filepath.Join(dir, "late-key.pem")
	if err := kp.WriteFiles(cert, key); err != nil {
		t.Fatal(err)
	}
	srv, err := f.ServerConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientConfig(f.CA, cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	cliErr, srvErr, cn := handshake(t, srv, cli, "127.0.0.1")
	if cliErr != nil || srvErr != nil || cn != "late-device" {
		t.Fatalf("handshake with reloaded CA's certificate: %v %v %q", cliErr, srvErr, cn)
	}

	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other-key.pem")
	if err := other.WriteFiles(filepath.Join(dir, "other.pem"), otherKey); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(f.CA, otherKey); err == nil {
		t.Error("LoadCA accepted a key of another CA")
	}
	if _, err := LoadCA(cert, key); err == nil {
		t.Error("LoadCA accepted a leaf certificate")
	}
	if _, err := LoadCA(filepath.Join(dir, "missing.pem"), key); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCA(missing) = %v", err)
	}
}
