package mosquitto_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/broker/mosquitto"
	"github.com/fedge-dev/fedge/internal/mosquittotest"
	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/topics"
)

const fleet = "f1"

func TestHashMatchesMosquittoPasswd(t *testing.T) {
	mosquittotest.Require(t)
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		bin = "/usr/bin/mosquitto_passwd"
	}
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("u:a-password-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-U", file).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	raw, _ := os.ReadFile(file)
	hash := strings.TrimSpace(strings.TrimPrefix(string(raw), "u:"))
	if ok, err := mosquitto.VerifyPassword(hash, "a-password-of-some-length"); !ok || err != nil {
		t.Fatalf("mosquitto_passwd's hash %q not verified: %v", hash, err)
	}
	if ok, _ := mosquitto.VerifyPassword(hash, "another-password-of-length"); ok {
		t.Fatal("wrong password verified")
	}
	ours, err := mosquitto.HashPassword("a-password-of-some-length")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := mosquitto.VerifyPassword(ours, "a-password-of-some-length"); !ok || err != nil || !strings.HasPrefix(ours, "$7$101$") {
		t.Fatalf("own hash %q: %v", ours, err)
	}
	if _, err := mosquitto.HashPassword("short"); err == nil {
		t.Fatal("short password hashed")
	}
}

func TestAccountValidation(t *testing.T) {
	bad := []mosquitto.Account{
		{Name: "coordinator-f1", Identity: topics.Identity{Role: topics.RoleDevice, ID: "coordinator-f1", Fleet: fleet}},
		{Name: "dev-a", Identity: topics.Identity{Role: topics.RoleDevice, ID: "dev-b", Fleet: fleet}},
		{Name: "a/b", Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}},
		{Name: "x", Identity: topics.Identity{Fleet: fleet}},
	}
	for _, a := range bad {
		if _, err := mosquitto.ACL([]mosquitto.Account{a}); err == nil {
			t.Errorf("ACL accepted %+v", a)
		}
	}
	dup := mosquitto.Account{Name: "dev-a", Identity: topics.Identity{Role: topics.RoleDevice, ID: "dev-a", Fleet: fleet}}
	if _, err := mosquitto.ACL([]mosquitto.Account{dup, dup}); err == nil {
		t.Error("ACL accepted a user twice")
	}
}

func TestAccountsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), mosquitto.AccountsFile)
	a, err := mosquitto.LoadAccounts(path)
	if err != nil || len(a.Devices()) != 0 {
		t.Fatalf("missing file: %v %v", a, err)
	}
	h, _ := mosquitto.HashPassword("password-of-dev-b-0123")
	if err := a.Put("coordinator-x", h); err == nil {
		t.Fatal("reserved id stored")
	}
	if err := a.Put("dev-b", "plain"); err == nil {
		t.Fatal("non-hash stored")
	}
	for _, id := range []string{"dev-b", "dev-a"} {
		if err := a.Put(id, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	b, err := mosquitto.LoadAccounts(path)
	if err != nil || fmt.Sprint(b.Devices()) != "[dev-a dev-b]" || b.Users["dev-a"].Hash != h {
		t.Fatalf("reloaded %v %v", b, err)
	}
	if err := os.WriteFile(path, []byte(`{"users":{"coordinator":{"hash":"`+h+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mosquitto.LoadAccounts(path); err == nil {
		t.Fatal("reserved id loaded")
	}
}

func TestConfigErrors(t *testing.T) {
	ok := mosquitto.Options{Listen: "127.0.0.1:8883", CAFile: "/ca", CertFile: "/c", KeyFile: "/k", PasswordFile: "/p", ACLFile: "/a", PersistenceDir: "/d"}
	if _, err := mosquitto.Config(ok); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*mosquitto.Options){
		"no port":        func(o *mosquitto.Options) { o.Listen = "127.0.0.1" },
		"host name":      func(o *mosquitto.Options) { o.Listen = "example.org:8883" },
		"port 0":         func(o *mosquitto.Options) { o.Listen = "127.0.0.1:0" },
		"no CA":          func(o *mosquitto.Options) { o.CAFile = "" },
		"newline":        func(o *mosquitto.Options) { o.ACLFile = "/a\nlistener 1883" },
		"huge messages":  func(o *mosquitto.Options) { o.MessageSizeLimit = 1 << 30 },
		"tiny queue":     func(o *mosquitto.Options) { o.MaxQueuedBytes = 10 },
		"negative limit": func(o *mosquitto.Options) { o.MemoryLimit = -1 },
	} {
		o := ok
		edit(&o)
		if _, err := mosquitto.Config(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// broker is a Mosquitto running the generated configuration.
type broker struct {
	inst      *mosquittotest.Instance
	pki       *tlsutil.Files
	passwords map[string]string
}

const sizeLimit = 4096

func startGenerated(t *testing.T) *broker {
	t.Helper()
	mosquittotest.Require(t)
	dir := t.TempDir()
	pki, err := tlsutil.WritePKI(filepath.Join(dir, "pki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{pki: pki, passwords: map[string]string{}}
	accounts := []mosquitto.Account{{Name: topics.CoordinatorUser, Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: fleet}}}
	for _, id := range []string{"dev-a", "dev-b"} {
		accounts = append(accounts, mosquitto.Account{Name: id, Identity: topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet}})
	}
	var pw strings.Builder
	for _, a := range accounts {
		b.passwords[a.Name] = "password-of-" + a.Name + "-0123456789"
		h, err := mosquitto.HashPassword(b.passwords[a.Name])
		if err != nil {
			t.Fatal(err)
		}
		line, err := mosquitto.PasswordLine(a.Name, h)
		if err != nil {
			t.Fatal(err)
		}
		pw.WriteString(line)
	}
	acl, err := mosquitto.ACL(accounts)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"passwd": pw.String(), "acl": acl} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	user := "mosquitto"
	if os.Geteuid() == 0 {
		user = "root" // the test's private temporary directory
	}
	b.inst = mosquittotest.StartGenerated(t, dir, true, func(port int, logFile string) (string, error) {
		return mosquitto.Config(mosquitto.Options{
			Listen: fmt.Sprintf("127.0.0.1:%d", port), CAFile: pki.CA, CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
			PasswordFile: filepath.Join(dir, "passwd"), ACLFile: filepath.Join(dir, "acl"),
			PersistenceDir: filepath.Join(dir, "data"), User: user, LogFile: logFile, MessageSizeLimit: sizeLimit,
		})
	})
	if log := b.inst.Log(); strings.Contains(log, "port 1883") {
		t.Fatalf("the generated configuration opened a default listener:\n%s", log)
	}
	return b
}

func (b *broker) opts(t *testing.T, user, clientID string) *paho.ClientOptions {
	cfg, err := b.pki.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	return paho.NewClientOptions().AddBroker(b.inst.URL()).SetTLSConfig(cfg).
		SetUsername(user).SetPassword(b.passwords[user]).SetClientID(clientID)
}

func (b *broker) connect(t *testing.T, user, clientID string, lost chan<- string) paho.Client {
	t.Helper()
	o := b.opts(t, user, clientID)
	if lost != nil {
		o.SetConnectionLostHandler(func(paho.Client, error) { lost <- clientID })
	}
	c, err := acltest.TryConnect(o)
	if err != nil {
		t.Fatalf("connect %s as %s: %v\n%s", clientID, user, err, b.inst.Log())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestGeneratedConfigTakeOver: with use_username_as_clientid a device's
// client id is its user name whatever it sends, so it cannot take over
// another device's session nor the coordinator's.
func TestGeneratedConfigTakeOver(t *testing.T) {
	b := startGenerated(t)
	lost := make(chan string, 4)
	coord := b.connect(t, topics.CoordinatorUser, topics.CoordinatorClientID(fleet), lost)
	in := make(chan paho.Message, 16)
	if tok := coord.Subscribe(topics.AllDevicesOut(fleet), 1, func(_ paho.Client, m paho.Message) { in <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	b.connect(t, "dev-b", "dev-b", lost)
	b.connect(t, "dev-a", "dev-b", nil)                                 // dev-a claims dev-b's client id
	a2 := b.connect(t, "dev-a", topics.CoordinatorClientID(fleet), nil) // and the coordinator's
	tok := a2.Publish(topics.DeviceOut(fleet, "dev-a", topics.KindStatus), 1, false, []byte("marker"))
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-in:
		if string(m.Payload()) != "marker" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("coordinator did not receive the device's status\n%s", b.inst.Log())
	}
	select {
	case id := <-lost:
		t.Fatalf("%s was taken over\n%s", id, b.inst.Log())
	case <-time.After(300 * time.Millisecond):
	}
	// Wrong credentials: Mosquitto 2.0 answers "not authorized" (MQTT
	// 3.1.1 and 5), where the embedded broker says "bad user name or
	// password"; documented in the README.
	for _, v := range []struct{ version, want byte }{{4, acltest.Connack3NotAuthorized}, {5, acltest.Connack5NotAuthorized}} {
		cfg, _ := b.pki.ClientConfig("")
		code, err := acltest.RawConnect{Version: v.version, ClientID: "dev-a", Username: "dev-a", Password: "wrong-password-0123456789", PasswordFlag: true}.Do(b.inst.Addr(), cfg)
		if err != nil || code != v.want {
			t.Fatalf("MQTT %d wrong password: 0x%02x %v, want 0x%02x", v.version, code, err, v.want)
		}
	}
}

// TestGeneratedConfigRetained documents what Mosquitto does with a
// device's retained messages: it cannot refuse them per client, so one
// within message_size_limit on a topic the device may write is kept (the
// embedded broker refuses it); one over the limit is dropped entirely.
func TestGeneratedConfigRetained(t *testing.T) {
	b := startGenerated(t)
	dev := b.connect(t, "dev-a", "dev-a", nil)
	junk := topics.DeviceOut(fleet, "dev-a", "junk")
	for i, size := range []int{100, sizeLimit + 1} {
		tok := dev.Publish(fmt.Sprintf("%s/%d", junk, i), 1, true, []byte(strings.Repeat("j", size)))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	coord := b.connect(t, topics.CoordinatorUser, "late", nil)
	in := make(chan paho.Message, 16)
	if tok := coord.Subscribe(junk+"/#", 1, func(_ paho.Client, m paho.Message) { in <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	var got []string
	timeout := time.After(time.Second)
	for done := false; !done; {
		select {
		case m := <-in:
			got = append(got, fmt.Sprintf("%s:%d:%v", m.Topic(), len(m.Payload()), m.Retained()))
		case <-timeout:
			done = true
		}
	}
	if want := []string{junk + "/0:100:true"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("retained on Mosquitto: %v, want %v", got, want)
	}
}

// TestGeneratedConfigSysPublish: on Mosquitto too a device's QoS 1 publish
// to $SYS is answered (acknowledged and dropped, or the connection ends),
// never left waiting.
func TestGeneratedConfigSysPublish(t *testing.T) {
	b := startGenerated(t)
	lost := make(chan string, 1)
	dev := b.connect(t, "dev-a", "dev-a", lost)
	tok := dev.Publish("$SYS/broker/uptime", 1, false, []byte("forged"))
	select {
	case <-tok.Done():
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("QoS 1 publish to $SYS neither acknowledged nor disconnected")
	}
}
