package wire_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProtoCheckScript runs scripts/proto-check.sh on a copy of the module's
// go.mod, proto/ and script: it passes on freshly generated code, fails naming
// the stale file after a .proto edit without regenerating, and passes again
// after --write. It needs protoc; without it the test skips unless
// FEDGE_REQUIRE_EXTERNAL is set.
func TestProtoCheckScript(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("FEDGE_REQUIRE_EXTERNAL") != "" {
			t.Fatalf("protoc not found and FEDGE_REQUIRE_EXTERNAL is set: %v", err)
		}
		t.Skip("protoc not installed (apt-get install protobuf-compiler)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "proto", "scripts/proto-check.sh"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-r", filepath.Join(root, p), filepath.Join(dir, p)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", p, err, out)
		}
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{filepath.Join(dir, "scripts/proto-check.sh")}, args...)...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// Whether the tree's own generated code is fresh is make check's
	// business; this test checks the script, so it starts from a
	// regenerated copy.
	if out, err := run("--write"); err != nil {
		t.Fatalf("--write: %v\n%s", err, out)
	}
	if out, err := run(); err != nil {
		t.Fatalf("check right after --write failed: %v\n%s", err, out)
	}
	proto := filepath.Join(dir, "proto/fedge/v1/envelope.proto")
	src, err := os.ReadFile(proto)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(src), "bytes signature = 7;", "bytes signature = 7;\n  uint32 proto_check_test = 99;", 1)
	if edited == string(src) {
		t.Fatalf("envelope.proto has no signature field to edit next to")
	}
	if err := os.WriteFile(proto, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run()
	if err == nil {
		t.Fatalf("check passed after a .proto edit without regenerating:\n%s", out)
	}
	if !strings.Contains(out, "proto/fedge/v1/envelope.pb.go") {
		t.Fatalf("failure does not name the stale file:\n%s", out)
	}
	if out, err := run("--write"); err != nil {
		t.Fatalf("--write: %v\n%s", err, out)
	}
	if out, err := run(); err != nil {
		t.Fatalf("check after --write failed: %v\n%s", err, out)
	}
	// A .pb.go whose .proto was deleted is stale too.
	orphan := filepath.Join(dir, "proto/fedge/v1/gone.pb.go")
	if err := os.WriteFile(orphan, []byte("package fedgepb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err == nil || !strings.Contains(out, "proto/fedge/v1/gone.pb.go") {
		t.Fatalf("orphaned .pb.go not reported (err %v):\n%s", err, out)
	}
}
