package agent

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKeyForms(t *testing.T) (ed25519.PublicKey, map[string]string) {
	pub, _, _ := ed25519.GenerateKey(nil)
	der, err := x509.MarshalPKIXPublicKey(pub)
	must(t, err)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	path := filepath.Join(t.TempDir(), "coordinator.pub")
	must(t, os.WriteFile(path, []byte(pemText), 0o600))
	return pub, map[string]string{
		"hex":    hex.EncodeToString(pub),
		"base64": base64.StdEncoding.EncodeToString(pub),
		"raw64":  base64.RawURLEncoding.EncodeToString(pub),
		"pem":    pemText,
		"file":   path,
	}
}

func TestParsePublicKey(t *testing.T) {
	pub, forms := testKeyForms(t)
	for name, s := range forms {
		k, err := ParsePublicKey(s)
		if err != nil || !k.Equal(pub) {
			t.Errorf("%s: key %x err %v", name, k, err)
		}
	}
	for _, bad := range []string{"", "abcd", strings.Repeat("zz", 32), "/no/such/file",
		"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

const goodYAML = `
fleet: demo
device_id: dev-1
broker:
  url: tcp://127.0.0.1:1883
  username: dev-1
  password: pw
coordinator_key: KEY
data: mnist:/data/mnist?part=0/10
storage_dir: /var/lib/fedge
limits:
  max_memory_pages: 1024
  call_timeout: 5s
  max_train_time: 10m
tags:
  region: eu-west
predict_listen: 127.0.0.1:8750
log:
  format: console
  level: debug
`

func TestConfig(t *testing.T) {
	_, forms := testKeyForms(t)
	good := strings.Replace(goodYAML, "KEY", forms["hex"], 1)
	c, err := DecodeConfig(strings.NewReader(good))
	must(t, err)
	must(t, c.Validate())
	if c.Limits.CallTimeout != 5*time.Second || c.Limits.MaxTrainTime != 10*time.Minute || c.Tags["region"] != "eu-west" {
		t.Fatalf("decoded %+v", c)
	}
	minimal, err := DecodeConfig(strings.NewReader("fleet: f\ndevice_id: d\nbroker: {url: 'ssl://h:8883'}\ncoordinator_key: " +
		forms["base64"] + "\ndata: csv:/x.csv?classes=3\nstorage_dir: /s\n"))
	must(t, err)
	must(t, minimal.Validate())
	if minimal.PredictListen != DefaultPredictListen || minimal.Log.Format != "json" || minimal.Limits.MaxMemoryPages != 4096 {
		t.Fatalf("defaults %+v", minimal)
	}
	noFleet, err := DecodeConfig(strings.NewReader("device_id: d\nbroker: {url: 'ssl://h:8883'}\ncoordinator_key: " +
		forms["base64"] + "\ndata: csv:/x.csv?classes=3\nstorage_dir: /s\n"))
	must(t, err)
	must(t, noFleet.Validate())
	if noFleet.Fleet != DefaultFleet {
		t.Fatalf("fleet %q without a fleet key, want the coordinator's default %q", noFleet.Fleet, DefaultFleet)
	}

	cases := map[string]struct{ from, to, want string }{
		"unknown key":         {"fleet: demo", "fleet: demo\nflet: x", "field flet not found"},
		"bad fleet":           {"fleet: demo", "fleet: de/mo", "fleet"},
		"missing device":      {"device_id: dev-1", "", "device_id"},
		"bad broker scheme":   {"tcp://127.0.0.1:1883", "http://127.0.0.1:1883", "scheme"},
		"broker without port": {"tcp://127.0.0.1:1883", "tcp://127.0.0.1", "host:port"},
		"cert on tcp":         {"  password: pw", "  password: pw\n  ca_file: /etc/hosts", "ssl"},
		"cert without key":    {"  password: pw", "  password: pw\n  client_cert: /etc/hosts", "go together"},
		"bad key":             {forms["hex"], "nothex", "coordinator_key"},
		"bad data kind":       {"mnist:/data/mnist?part=0/10", "parquet:/x", "unknown kind"},
		"bad part":            {"part=0/10", "part=10/10", "part"},
		"no storage":          {"storage_dir: /var/lib/fedge", "", "storage_dir"},
		"tiny memory":         {"max_memory_pages: 1024", "max_memory_pages: 2", "max_memory_pages"},
		"bad duration":        {"call_timeout: 5s", "call_timeout: soon", "time.Duration"},
		"public predict":      {"predict_listen: 127.0.0.1:8750", "predict_listen: 0.0.0.0:8750", "loopback"},
		"bad log level":       {"level: debug", "level: loud", "log"},
		"password only":       {"  username: dev-1\n", "", "password without"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			y := strings.Replace(good, tc.from, tc.to, 1)
			if y == good {
				t.Fatalf("replacement %q not found", tc.from)
			}
			c, err := DecodeConfig(strings.NewReader(y))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseDataSpec(t *testing.T) {
	good := map[string]DataSpec{
		"mnist:/d":                                  {Kind: "mnist", Paths: []string{"/d"}, Classes: 10},
		"mnist:/d?part=3/10":                        {Kind: "mnist", Paths: []string{"/d"}, Classes: 10, Part: 3, Parts: 10},
		"mnist-idx:/i,/l?classes=5":                 {Kind: "mnist-idx", Paths: []string{"/i", "/l"}, Classes: 5},
		"csv:/x.csv?classes=3&header":               {Kind: "csv", Paths: []string{"/x.csv"}, Classes: 3, Header: true},
		"csv:/x.csv?classes=3&header=true&part=0/2": {Kind: "csv", Paths: []string{"/x.csv"}, Classes: 3, Header: true, Parts: 2},
	}
	for s, want := range good {
		d, err := ParseDataSpec(s)
		if want.Kind == "" {
			if err == nil {
				t.Errorf("%q accepted", s)
			}
			continue
		}
		if err != nil || d.Kind != want.Kind || strings.Join(d.Paths, ",") != strings.Join(want.Paths, ",") ||
			d.Classes != want.Classes || d.Part != want.Part || d.Parts != want.Parts || d.Header != want.Header {
			t.Errorf("%q: %+v, %v", s, d, err)
		}
	}
	for _, s := range []string{"", "mnist", "mnist:", "foo:/x", "csv:/x", "mnist:/d?part=1", "mnist:/d?part=-1/2",
		"mnist:/d?classes=3", "mnist-idx:/i", "csv:/x?classes=1", "mnist:/d?part=a/b", "mnist:/d?%zz"} {
		if _, err := ParseDataSpec(s); !errors.Is(err, ErrBadDataSpec) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestDataSpecLoadCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.csv")
	must(t, os.WriteFile(path, []byte("a,b,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,2\n0.7,0.8,1\n"), 0o600))
	d, err := ParseDataSpec("csv:" + path + "?classes=3&header=true&part=1/2")
	must(t, err)
	src, err := d.Load()
	must(t, err)
	if src.Len() != 2 || src.Dim() != 2 {
		t.Fatalf("len %d dim %d", src.Len(), src.Dim())
	}
	if x, y := src.Sample(1); x[0] != 0.7 || y != 1 {
		t.Fatalf("sample 1 = %v, %d", x, y)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	k1, err := LoadOrCreateKey(path)
	must(t, err)
	st, err := os.Stat(path)
	must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	k2, err := LoadOrCreateKey(path)
	must(t, err)
	if !k1.Equal(k2) {
		t.Fatal("key changed on reload")
	}
	must(t, os.WriteFile(path, []byte("garbage"), 0o600))
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("garbage key accepted")
	}
}

func FuzzDecodeConfig(f *testing.F) {
	f.Add(goodYAML)
	f.Add("fleet: [")
	f.Add("limits: {call_timeout: 1}")
	f.Add("tags: {a: b}\nunknown: 1")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := DecodeConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		_ = c.Validate()
	})
}

func FuzzParseDataSpec(f *testing.F) {
	for _, s := range []string{"mnist:/d?part=3/10", "csv:/x?classes=3&header=1", "mnist-idx:/a,/b", "x:", "mnist:/d?part=9/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDataSpec(s)
		if err != nil {
			return
		}
		if d.Parts > 0 && (d.Part < 0 || d.Part >= d.Parts) {
			t.Fatalf("accepted part %d/%d", d.Part, d.Parts)
		}
		if len(d.Paths) == 0 || d.Classes < 2 && d.Kind != "csv" {
			t.Fatalf("accepted %+v", d)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(nil)
	f.Add(hex.EncodeToString(pub))
	f.Add(base64.StdEncoding.EncodeToString(pub))
	f.Add("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "/\\") || strings.TrimSpace(s) != s {
			return // not a key text: may name a file on this machine
		}
		k, err := ParsePublicKey(s)
		if err == nil && len(k) != ed25519.PublicKeySize {
			t.Fatalf("key of %d bytes", len(k))
		}
	})
}
