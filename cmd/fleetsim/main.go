// Command fleetsim runs a simulated fleet: the real coordinator and N real
// edge agents in one process, over the embedded MQTT broker or the
// in-memory transport, under a virtual or the wall clock (see
// simulations/fleet).
//
//	fleetsim quickstart                 the README's first command
//	fleetsim run --scenario NAME|PATH [--out DIR] [--seed N] [--clients N]
//	             [--rounds N] [--transport memory|broker] [--clock virtual|wall]
//	             [--strategy NAME]
//	fleetsim list                       the shipped scenarios
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/logging"
	"github.com/fedge-dev/fedge/simulations/fleet"
	"github.com/fedge-dev/fedge/simulations/scenario"
	"github.com/fedge-dev/fedge/simulations/scenarios"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage:
  fleetsim quickstart [flags]            run the quickstart scenario
  fleetsim run --scenario NAME|PATH [flags]
  fleetsim list                          list the shipped scenarios
flags of run and quickstart:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: a command is required", errUsage)
	}
	switch args[0] {
	case "list":
		for _, n := range scenarios.Names() {
			raw, _ := scenarios.Read(n)
			desc := ""
			if sc, err := scenario.Parse(raw); err == nil {
				desc = sc.Description
			}
			fmt.Fprintf(stdout, "%-20s %s\n", n, desc)
		}
		return nil
	case "quickstart":
		return runScenario(ctx, append([]string{"--scenario", "quickstart"}, args[1:]...), stdout, stderr)
	case "run":
		return runScenario(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

type flags struct {
	scenario, out, transport, clock, strategy, baseline, mnist, logLevel string
	seed                                                                 uint64
	clients, rounds                                                      int
}

func runScenario(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetsim run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	fs.StringVar(&f.scenario, "scenario", "", "scenario name (see fleetsim list) or path to a YAML file")
	fs.StringVar(&f.out, "out", "", "output directory (default out/<scenario>-<seed>)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed (default: the scenario's)")
	fs.IntVar(&f.clients, "clients", 0, "number of devices (default: the scenario's)")
	fs.IntVar(&f.rounds, "rounds", 0, "number of rounds (default: the scenario's)")
	fs.StringVar(&f.transport, "transport", "", "memory or broker (default: the scenario's)")
	fs.StringVar(&f.clock, "clock", "", "virtual or wall (default: the scenario's)")
	fs.StringVar(&f.strategy, "strategy", "", "aggregation strategy (default: the scenario's), e.g. fedavg to compare with a robust one")
	fs.StringVar(&f.baseline, "baseline", "", "also run the scenario with this strategy, for comparison in summary.json (default: fedavg when the scenario has attackers and a robust strategy; none: off)")
	fs.StringVar(&f.mnist, "mnist", "", "directory of the MNIST IDX files (default: found in the Go module cache)")
	fs.StringVar(&f.logLevel, "log-level", "", "log level of the coordinator and agents (debug, info, warn, error; default: no logs)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	sc, err := loadScenario(f.scenario)
	if err != nil {
		return err
	}
	if err := override(sc, fs, f); err != nil {
		return err
	}
	out := f.out
	if out == "" {
		out = filepath.Join("out", fmt.Sprintf("%s-%d", sc.Name, sc.Seed))
	}
	log := zap.NewNop()
	if f.logLevel != "" {
		if log, err = logging.NewTo(stderr, logging.FormatConsole, f.logLevel); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		defer func() { _ = log.Sync() }()
	}
	fmt.Fprintf(stdout, "fleetsim: %s: %d devices over %s, %s clock, model %s, strategy %s, up to %d rounds\n",
		sc.Name, sc.Clients, sc.Transport, sc.Clock, sc.Model, sc.Strategy.Name, sc.Rounds)
	baseline := f.baseline
	if baseline == "" && sc.Attackers.Fraction > 0 && sc.Strategy.Name != "fedavg" {
		baseline = "fedavg"
	}
	if baseline == "none" {
		baseline = ""
	}
	if baseline != "" && baseline != sc.Strategy.Name {
		fmt.Fprintf(stdout, "fleetsim: running the %s baseline first\n", baseline)
	}
	res, err := fleet.Run(ctx, sc, fleet.Options{Out: out, MNISTDir: f.mnist, Log: log, Progress: stderr, Baseline: baseline})
	if err != nil {
		return err
	}
	s := res.Summary
	fmt.Fprintf(stdout, "accuracy %.4f after %d rounds (target %.4f: ", s.FinalAccuracy, s.Rounds, s.TargetAccuracy)
	if s.RoundsToTarget != nil {
		fmt.Fprintf(stdout, "reached in round %d, %.0f s of fleet time)\n", *s.RoundsToTarget, *s.VirtualSecondsToTarget)
	} else {
		fmt.Fprintln(stdout, "not reached)")
	}
	fmt.Fprintf(stdout, "%.0f s of fleet time in %.1f s; %d bytes up, %d bytes down\n", s.VirtualSeconds, s.WallSeconds, s.TotalBytesUp, s.TotalBytesDown)
	fmt.Fprintf(stdout, "metrics: %s\nsummary: %s\n", filepath.Join(out, "metrics.jsonl"), filepath.Join(out, "summary.json"))
	if b := s.Baseline; b != nil {
		fmt.Fprintf(stdout, "baseline %s: accuracy %.4f after %d rounds (%s: %.4f)\n", b.Strategy, b.FinalAccuracy, b.Rounds, s.Strategy, s.FinalAccuracy)
	}
	if len(res.Plots) > 0 {
		fmt.Fprintf(stdout, "plots:   %s\n", strings.Join(res.Plots, "\n         "))
	}
	if res.Stalls > 0 {
		fmt.Fprintf(stdout, "warning: the scheduler gave up waiting %d times; this run may not be reproducible\n", res.Stalls)
	}
	return nil
}

// loadScenario reads a shipped scenario by name or a YAML file by path.
func loadScenario(name string) (*scenario.Scenario, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: --scenario is required (fleetsim list shows the shipped ones)", errUsage)
	}
	if raw, ok := scenarios.Read(name); ok && !strings.ContainsAny(name, "/.") {
		return scenario.Parse(raw)
	}
	return scenario.Load(name)
}

// override applies the flags that were set and validates the result.
func override(sc *scenario.Scenario, fs *flag.FlagSet, f flags) error {
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "seed":
			sc.Seed = f.seed
		case "clients":
			sc.Clients = f.clients
		case "rounds":
			sc.Rounds = f.rounds
		case "transport":
			sc.Transport = f.transport
		case "clock":
			sc.Clock = f.clock
		case "strategy":
			sc.Strategy.Name = f.strategy
		}
	})
	if sc.Selection.MinClients > sc.Clients {
		sc.Selection.MinClients = sc.Clients
	}
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
