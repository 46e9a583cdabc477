package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedge-dev/fedge/internal/atomicfile"
	"github.com/fedge-dev/fedge/internal/broker"
	"github.com/fedge-dev/fedge/internal/broker/mosquitto"
	"github.com/fedge-dev/fedge/internal/tlsutil"
	"github.com/fedge-dev/fedge/internal/topics"
)

// CoordinatorBrokerPasswordFile is the file, in the data directory, of the
// coordinator's password at an external broker (give it to `serve
// --broker-password-file`). broker-config creates it once and reuses it.
const CoordinatorBrokerPasswordFile = "broker-coordinator.password"

// brokerConfigCmd is `coordinator broker-config mosquitto`: it writes what
// an external Mosquitto needs from the data directory's accounts.
func brokerConfigCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "mosquitto" {
		return fmt.Errorf("%w: broker-config needs a broker kind: mosquitto", errUsage)
	}
	fs := flag.NewFlagSet("broker-config mosquitto", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "fedge-data", "coordinator data directory (device accounts, coordinator broker password)")
	out := fs.String("out", "", "directory to write mosquitto.conf, passwd, acl (and pki/ when generated) into (required)")
	fleet := fs.String("fleet", "default", "fleet id")
	var o mosquitto.Options
	fs.StringVar(&o.Listen, "listen", mosquitto.DefaultListen, "the TLS listener, IP:port")
	fs.StringVar(&o.CertFile, "tls-cert", "", "broker certificate (PEM); with --tls-key and --tls-ca; default: generate a CA and certificate in OUT/pki")
	fs.StringVar(&o.KeyFile, "tls-key", "", "broker private key (PEM)")
	fs.StringVar(&o.CAFile, "tls-ca", "", "CA that signed the broker certificate, and client certificates with --require-client-cert")
	hosts := fs.String("tls-hosts", "localhost,127.0.0.1", "host names and IPs of the generated broker certificate, comma-separated")
	fs.BoolVar(&o.RequireClientCert, "require-client-cert", false, "require client certificates signed by the CA (mTLS) besides passwords")
	fs.StringVar(&o.User, "user", "mosquitto", "account Mosquitto runs as; it must be able to read OUT")
	fs.StringVar(&o.PersistenceDir, "persistence-dir", "", "where Mosquitto keeps sessions and retained messages (default OUT/data)")
	fs.StringVar(&o.LogFile, "log-file", "", "Mosquitto log file (default: Mosquitto's own)")
	fs.IntVar(&o.MessageSizeLimit, "message-size-limit", mosquitto.DefaultMessageSizeLimit, "largest publish payload in bytes")
	fs.IntVar(&o.MaxQueued, "max-queued", mosquitto.DefaultMaxQueued, "QoS 1 messages queued per client")
	fs.IntVar(&o.MaxQueuedBytes, "max-queued-bytes", mosquitto.DefaultMaxQueuedBytes, "bytes queued per client")
	fs.IntVar(&o.MemoryLimit, "memory-limit", mosquitto.DefaultMemoryLimit, "Mosquitto's heap limit in bytes (0: none)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: broker-config mosquitto takes no arguments, got %q", errUsage, fs.Args())
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := topics.ValidateID(*fleet); err != nil {
		return fmt.Errorf("--fleet: %w", err)
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o750); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	generated, err := brokerTLSFiles(&o, outDir, *hosts)
	if err != nil {
		return err
	}
	if generated && o.RequireClientCert {
		return fmt.Errorf("%w: --require-client-cert needs --tls-ca (and --tls-cert, --tls-key): the CA that issues the devices' certificates", errUsage)
	}
	if o.PersistenceDir == "" {
		o.PersistenceDir = filepath.Join(outDir, "data")
	}
	if o.PersistenceDir, err = filepath.Abs(o.PersistenceDir); err != nil {
		return err
	}
	if err := os.MkdirAll(o.PersistenceDir, 0o750); err != nil {
		return fmt.Errorf("--persistence-dir: %w", err)
	}
	o.PasswordFile, o.ACLFile = filepath.Join(outDir, "passwd"), filepath.Join(outDir, "acl")

	coordPassword, err := loadOrCreateBrokerPassword(filepath.Join(*data, CoordinatorBrokerPasswordFile))
	if err != nil {
		return err
	}
	accounts, err := mosquitto.LoadAccounts(filepath.Join(*data, mosquitto.AccountsFile))
	if err != nil {
		return err
	}
	coordHash, err := mosquitto.HashPassword(coordPassword)
	if err != nil {
		return err
	}
	list := []mosquitto.Account{{Name: topics.CoordinatorUser, Identity: topics.Identity{Role: topics.RoleCoordinator, Fleet: *fleet}}}
	hashes := []string{coordHash}
	for _, id := range accounts.Devices() {
		list = append(list, mosquitto.Account{Name: id, Identity: topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: *fleet}})
		hashes = append(hashes, accounts.Users[id].Hash)
	}
	acl, err := mosquitto.ACL(list)
	if err != nil {
		return err
	}
	var pw strings.Builder
	for i, a := range list {
		line, err := mosquitto.PasswordLine(a.Name, hashes[i])
		if err != nil {
			return err
		}
		pw.WriteString(line)
	}
	conf, err := mosquitto.Config(o)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path, data string
	}{{o.PasswordFile, pw.String()}, {o.ACLFile, acl}, {filepath.Join(outDir, "mosquitto.conf"), conf}} {
		if err := atomicfile.Write(f.path, []byte(f.data), 0o640); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %s/{mosquitto.conf,passwd,acl}: coordinator and %d device account(s) of fleet %s, TLS listener %s\n",
		outDir, len(list)-1, *fleet, o.Listen)
	if generated {
		fmt.Fprintf(stdout, "generated a CA and broker certificate in %s/pki (agents and the coordinator need %s)\n", outDir, o.CAFile)
	}
	coordFile, _ := filepath.Abs(filepath.Join(*data, CoordinatorBrokerPasswordFile))
	fmt.Fprintf(stdout, `next:
  chown -R %[1]s: %[2]s && mosquitto -c %[2]s/mosquitto.conf     (after adding devices: kill -HUP the broker)
  coordinator serve --data %[3]s --fleet %[4]s --broker ssl://HOST:PORT --broker-user %[5]s \
      --broker-password-file %[6]s --broker-ca %[7]s
`, o.User, outDir, *data, *fleet, topics.CoordinatorUser, coordFile, o.CAFile)
	return nil
}

// brokerTLSFiles checks the given TLS files, or generates a CA and a broker
// certificate in out/pki (once: later runs reuse them). It reports whether
// the files are generated ones.
func brokerTLSFiles(o *mosquitto.Options, out, hosts string) (bool, error) {
	given := 0
	for _, f := range []string{o.CertFile, o.KeyFile, o.CAFile} {
		if f != "" {
			given++
		}
	}
	if given == 3 {
		if _, err := tlsutil.ServerConfig(o.CertFile, o.KeyFile, ""); err != nil {
			return false, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		if _, err := tlsutil.LoadPool(o.CAFile); err != nil {
			return false, fmt.Errorf("--tls-ca: %w", err)
		}
		var err error
		for _, p := range []*string{&o.CertFile, &o.KeyFile, &o.CAFile} {
			if *p, err = filepath.Abs(*p); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	if given != 0 {
		return false, fmt.Errorf("%w: give all of --tls-cert, --tls-key and --tls-ca, or none to generate them", errUsage)
	}
	dir := filepath.Join(out, "pki")
	o.CAFile, o.CertFile, o.KeyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if _, err := os.Stat(o.CertFile); err == nil {
		if _, err := tlsutil.ServerConfig(o.CertFile, o.KeyFile, ""); err != nil {
			return false, fmt.Errorf("generated certificate in %s: %w", dir, err)
		}
		return true, nil
	}
	var names []string
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			names = append(names, h)
		}
	}
	if len(names) == 0 {
		return false, fmt.Errorf("%w: --tls-hosts is empty", errUsage)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, err
	}
	ca, err := tlsutil.NewCA("fedge broker CA")
	if err != nil {
		return false, err
	}
	if err := ca.WriteFiles(o.CAFile, filepath.Join(dir, "ca-key.pem")); err != nil {
		return false, err
	}
	kp, err := ca.IssueServer(names...)
	if err != nil {
		return false, err
	}
	if err := kp.WriteFiles(o.CertFile, o.KeyFile); err != nil {
		return false, err
	}
	return true, nil
}

// loadOrCreateBrokerPassword reads a password file, or creates it with a
// new random password (mode 0600).
func loadOrCreateBrokerPassword(path string) (string, error) {
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		pw := strings.TrimSpace(string(raw))
		if len(pw) < 16 || strings.ContainsAny(pw, ":\n\r") {
			return "", fmt.Errorf("%s: want one line of at least 16 characters without ':'", path)
		}
		return pw, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	_, pw, err := broker.GenerateSecret()
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	return pw, nil
}

// externalDeviceAccount issues a broker password for a device of a daemon
// that uses an external broker (which keeps no broker credentials), records
// its Mosquitto hash in the data directory for broker-config, and tells the
// operator what to do.
func externalDeviceAccount(w io.Writer, data, id string) error {
	_, password, err := broker.GenerateSecret()
	if err != nil {
		return err
	}
	hash, err := mosquitto.HashPassword(password)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  broker username:  %s\n  broker password:  %s\n", id, password)
	path := filepath.Join(data, mosquitto.AccountsFile)
	if st, err := os.Stat(data); err == nil && st.IsDir() {
		a, err := mosquitto.LoadAccounts(path)
		if err == nil {
			if err = a.Put(id, hash); err == nil {
				err = a.Save()
			}
		}
		if err == nil {
			fmt.Fprintf(w, "external broker: the password's hash is recorded in %s; regenerate the broker's files and reload it:\n"+
				"  coordinator broker-config mosquitto --data %s --out DIR ...   (same flags as before)\n"+
				"  kill -HUP $(pidof mosquitto)\n", path, data)
			return nil
		}
		fmt.Fprintf(w, "external broker: could not record the account in %s: %v\n", path, err)
	}
	fmt.Fprintf(w, "external broker: add this line to Mosquitto's password file, and the device to its ACL file\n"+
		"(or run `devices add` with --data pointing at the coordinator's data directory, then broker-config):\n  %s:%s\n", id, hash)
	return nil
}
