package layers

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fedge-dev/fedge"

// mayImport says which layers (by top-level directory) a layer's packages
// may import directly. Within a layer everything is allowed but what the
// rules below forbid; cmd and scripts (benchmark mains) are imported by
// nobody.
var mayImport = map[string][]string{
	"proto":       {"proto"},
	"internal":    {"internal", "proto"},
	"aggregation": {"aggregation", "proto"},
	"wasm-models": {"wasm-models", "proto"},
	"edgeagent":   {"edgeagent", "internal", "proto", "aggregation", "wasm-models"},
	"coordinator": {"coordinator", "internal", "proto", "aggregation", "wasm-models"},
	"simulations": {"simulations", "edgeagent", "coordinator", "internal", "proto", "aggregation", "wasm-models"},
	"cmd":         {"edgeagent", "coordinator", "simulations", "internal", "proto", "aggregation", "wasm-models"},
	"scripts":     {"edgeagent", "coordinator", "simulations", "internal", "proto", "aggregation", "wasm-models"},
}

// rule forbids packages matching From (a path in the module, "x/..." for a
// subtree) to import (Linked false: directly; true: anywhere in their
// dependencies) a package matching To (a path in the module or, with a
// dot in its first element, any import path prefix).
type rule struct {
	From, To string
	Linked   bool
	Why      string
}

var rules = []rule{
	{From: "coordinator/round", To: "coordinator/server", Why: "the round machine is driven by the server, never the reverse"},
	{From: "coordinator/round", To: "coordinator/registry", Why: "the round machine reads no registry"},
	{From: "coordinator/round", To: "coordinator/admin", Why: "the round machine knows no HTTP API"},
	{From: "coordinator/round", To: "github.com/dgraph-io/badger", Linked: true, Why: "a pure core links no database"},
	{From: "coordinator/round", To: "go.uber.org/zap", Linked: true, Why: "a pure core logs nothing"},
	{From: "coordinator/store/...", To: "coordinator/round", Why: "storage sits below the protocol"},
	{From: "coordinator/store/...", To: "coordinator/server", Why: "storage sits below the driver"},
	{From: "aggregation/...", To: "go.uber.org/zap", Linked: true, Why: "aggregation is pure math: no logging"},
	{From: "aggregation/...", To: "github.com/dgraph-io/badger", Linked: true, Why: "aggregation is pure math: no IO"},
	{From: "aggregation/...", To: "github.com/eclipse/paho.mqtt.golang", Linked: true, Why: "aggregation is pure math: no IO"},
	{From: "edgeagent/data/...", To: "edgeagent/runtime", Why: "data sources know no WASM host"},
	{From: "edgeagent/data/...", To: "edgeagent/agent", Why: "data sources sit below the agent"},
	{From: "edgeagent/runtime", To: "edgeagent/agent", Why: "the WASM host sits below the agent"},
	{From: "edgeagent/predict", To: "edgeagent/agent", Why: "local inference is a sibling of the agent loop, sharing the model store through a neutral package"},
}

// violation is one import that breaks a rule: From imports (or links) To.
type violation struct{ From, To string }

// known are today's violations, tolerated until the refactor of issue 14
// removes them; the test fails when one of them is gone, so that it is
// taken off this list in the change that fixes it.
var known = map[violation]string{
	// The agent opens its Badger state with coordinator/store's low-memory
	// options: the options belong in a neutral package.
	{"edgeagent/agent", "coordinator/store"}: "issue 14: Badger options shared through coordinator/store",
	// The coordinator validates model modules and evaluates on the server
	// with the agent's WASM host and data sources: both belong in neutral
	// packages (or behind an interface the main wires).
	{"coordinator/registry", "edgeagent/runtime"}: "issue 14: model validation uses the agent's WASM host",
	{"coordinator/server", "edgeagent/runtime"}:   "issue 14: server-side evaluation uses the agent's WASM host",
	{"coordinator/server", "edgeagent/data"}:      "issue 14: server-side evaluation uses the agent's data sources",
	// predict takes agent.ModelStore, agent.DecodeWeights and
	// agent.ErrNoModel: the model store belongs below both.
	{"edgeagent/predict", "edgeagent/agent"}: "issue 14: the model store lives in the agent package",
	// round takes its records (ModelVersion, Metrics, ...) from
	// coordinator/store, which also holds the Badger store and its zap
	// logger adapter: the records and the Store interface belong in a
	// package that links neither.
	{"coordinator/round", "github.com/dgraph-io/badger"}: "issue 14: round links Badger through coordinator/store",
	{"coordinator/round", "go.uber.org/zap"}:             "issue 14: round links zap through coordinator/store",
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// listPackages returns the module's packages (test files excluded) with
// module-relative paths.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list packages: %v", err)
	}
	cmd := exec.Command(goCmd, "list", "-e", "-json=ImportPath,Imports,Deps,Error", module+"/...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			pkg
			Error *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p.pkg)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// rel returns the module-relative path of an import path, and false for
// a path outside the module.
func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func layer(relPath string) string {
	l, _, _ := strings.Cut(relPath, "/")
	return l
}

// matches reports whether a package (module-relative if inModule, else a
// full import path) matches a rule's pattern.
func matches(pattern, path string, inModule bool) bool {
	first, _, _ := strings.Cut(pattern, "/")
	if strings.Contains(first, ".") { // outside the module: an import path prefix
		return !inModule && (path == pattern || strings.HasPrefix(path, pattern+"/"))
	}
	if !inModule {
		return false
	}
	if sub, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == sub || strings.HasPrefix(path, sub+"/")
	}
	return path == pattern
}

// violations returns every import of pkgs that breaks the rules, with the
// reason.
func violations(pkgs []pkg) map[violation]string {
	found := map[violation]string{}
	for _, p := range pkgs {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		allowed, ok := mayImport[layer(from)]
		if !ok {
			found[violation{from, "(layer)"}] = "package outside every layer; add its layer to mayImport and RATIONALE.md"
			continue
		}
		for _, imp := range p.Imports {
			to, ok := rel(imp)
			if !ok {
				continue
			}
			if !slices.Contains(allowed, layer(to)) {
				found[violation{from, to}] = layer(from) + " may not import " + layer(to)
			}
		}
		for _, r := range rules {
			if !matches(r.From, from, true) {
				continue
			}
			paths := p.Imports
			if r.Linked {
				paths = p.Deps
			}
			for _, imp := range paths {
				to, in := rel(imp)
				if !in {
					to = imp
				}
				if matches(r.To, to, in) {
					found[violation{from, r.To}] = r.Why
					break
				}
			}
		}
	}
	return found
}

func sorted(m map[violation]string) []violation {
	vs := slices.Collect(maps.Keys(m))
	slices.SortFunc(vs, func(a, b violation) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
	return vs
}

// TestLayers checks the module's packages (not their tests) against the
// rules.
func TestLayers(t *testing.T) {
	found := violations(listPackages(t))
	for _, v := range sorted(found) {
		if _, ok := known[v]; !ok {
			t.Errorf("%s imports %s: %s (RATIONALE.md, Structure)", v.From, v.To, found[v])
		}
	}
	for _, v := range sorted(known) {
		if _, ok := found[v]; !ok {
			t.Errorf("known violation %s -> %s (%s) is gone: take it off the known list", v.From, v.To, known[v])
		}
	}
}

// The checker itself: a new violation of each kind is reported, allowed
// imports are not.
func TestViolations(t *testing.T) {
	p := func(path string, imports, deps []string) pkg {
		var full []string
		for _, i := range imports {
			full = append(full, module+"/"+i)
		}
		return pkg{ImportPath: module + "/" + path, Imports: full, Deps: append(full, deps...)}
	}
	pkgs := []pkg{
		p("aggregation/dp", []string{"aggregation", "proto/fedge/v1"}, nil),
		p("aggregation/codec", []string{"internal/wire"}, nil),
		p("coordinator/round", []string{"coordinator/server"}, []string{"github.com/dgraph-io/badger/v4", "go.uber.org/zap"}),
		p("edgeagent/agent", []string{"coordinator/round", "internal/wire"}, nil),
		p("internal/wire", []string{"edgeagent/agent"}, nil),
		p("simulations/fleet", []string{"coordinator/server", "edgeagent/agent", "cmd/fleetsim"}, nil),
		p("tools/x", nil, nil),
	}
	want := map[violation]bool{
		{"aggregation/codec", "internal/wire"}:               true,
		{"coordinator/round", "coordinator/server"}:          true,
		{"coordinator/round", "github.com/dgraph-io/badger"}: true,
		{"coordinator/round", "go.uber.org/zap"}:             true,
		{"edgeagent/agent", "coordinator/round"}:             true,
		{"internal/wire", "edgeagent/agent"}:                 true,
		{"simulations/fleet", "cmd/fleetsim"}:                true,
		{"tools/x", "(layer)"}:                               true,
	}
	got := violations(pkgs)
	for v := range want {
		if _, ok := got[v]; !ok {
			t.Errorf("missed %s -> %s", v.From, v.To)
		}
	}
	for v, why := range got {
		if !want[v] {
			t.Errorf("reported %s -> %s (%s), which is allowed", v.From, v.To, why)
		}
	}
}
