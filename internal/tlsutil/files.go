package tlsutil

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
)

// Files are the paths of a PKI written by WritePKI.
type Files struct {
	Dir        string
	CA         string            // ca.pem
	CAKey      string            // ca-key.pem (mode 0600), to issue more certificates with LoadCA
	ServerCert string            // server.pem
	ServerKey  string            // server-key.pem
	ClientCert map[string]string // common name -> client-{cn}.pem
	ClientKey  map[string]string // common name -> client-{cn}-key.pem
}

// WritePKI creates a CA, a server certificate for serverHosts (loopback when
// empty) and one client certificate per common name, and writes them into dir
// (created with mode 0755 if missing). Client names must be usable in file
// names (fedge ids are). Private keys are written with mode 0600, so a
// broker started as another user (Mosquitto drops root) may need them
// chmod-ed.
func WritePKI(dir string, serverHosts []string, clientCNs ...string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create PKI dir: %w", err)
	}
	ca, err := NewCA("fedge test CA")
	if err != nil {
		return nil, err
	}
	f := &Files{
		Dir:        dir,
		CA:         filepath.Join(dir, "ca.pem"),
		CAKey:      filepath.Join(dir, "ca-key.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: map[string]string{},
		ClientKey:  map[string]string{},
	}
	if err := ca.WriteFiles(f.CA, f.CAKey); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	srv, err := ca.IssueServer(serverHosts...)
	if err != nil {
		return nil, err
	}
	if err := srv.WriteFiles(f.ServerCert, f.ServerKey); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	for _, cn := range clientCNs {
		if cn == "" || filepath.Base(cn) != cn || cn == "." || cn == ".." {
			return nil, fmt.Errorf("client common name %q cannot be used in a file name", cn)
		}
		kp, err := ca.IssueClient(cn)
		if err != nil {
			return nil, err
		}
		cert := filepath.Join(dir, "client-"+cn+".pem")
		key := filepath.Join(dir, "client-"+cn+"-key.pem")
		if err := kp.WriteFiles(cert, key); err != nil {
			return nil, fmt.Errorf("client %q: %w", cn, err)
		}
		f.ClientCert[cn], f.ClientKey[cn] = cert, key
	}
	return f, nil
}

// ServerConfig loads the server config of the written PKI; mTLS requires
// client certificates signed by the CA.
func (f *Files) ServerConfig(mTLS bool) (*tls.Config, error) {
	ca := ""
	if mTLS {
		ca = f.CA
	}
	return ServerConfig(f.ServerCert, f.ServerKey, ca)
}

// ClientConfig loads the client config of the written PKI for a client common
// name; "" gives a config without client certificate.
func (f *Files) ClientConfig(cn string) (*tls.Config, error) {
	if cn == "" {
		return ClientConfig(f.CA, "", "", "")
	}
	cert, ok := f.ClientCert[cn]
	if !ok {
		return nil, fmt.Errorf("no client certificate for %q in %s", cn, f.Dir)
	}
	return ClientConfig(f.CA, cert, f.ClientKey[cn], "")
}
