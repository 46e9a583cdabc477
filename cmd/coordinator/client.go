package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/server"
	"github.com/fedge-dev/fedge/internal/progress"
	"github.com/fedge-dev/fedge/internal/tlsutil"
)

// clientFlags are the flags of every admin API command.
type clientFlags struct {
	adminURL, token, data string
	caFile, cert, key     string
	timeout               time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("FEDGE_ADMIN")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	fs.StringVar(&c.adminURL, "admin", def, "admin API URL ($FEDGE_ADMIN)")
	fs.StringVar(&c.token, "token", "", "admin token (default $FEDGE_ADMIN_TOKEN, else DATA/admin.token)")
	fs.StringVar(&c.data, "data", "fedge-data", "data directory holding admin.token")
	fs.StringVar(&c.caFile, "admin-ca", os.Getenv("FEDGE_ADMIN_CA"), "CA certificate to trust for an https:// admin API ($FEDGE_ADMIN_CA; default: the system's)")
	fs.StringVar(&c.cert, "admin-cert", "", "client certificate for an admin API that requires mTLS")
	fs.StringVar(&c.key, "admin-key", "", "private key of --admin-cert")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "request timeout")
}

func (c *clientFlags) client() (*admin.Client, error) {
	tok := c.token
	if tok == "" {
		tok = os.Getenv("FEDGE_ADMIN_TOKEN")
	}
	if tok == "" {
		raw, err := os.ReadFile(filepath.Join(c.data, server.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("no admin token: give --token, set FEDGE_ADMIN_TOKEN or point --data at the daemon's data directory (%w)", err)
		}
		tok = strings.TrimSpace(string(raw))
	}
	if !strings.HasPrefix(c.adminURL, "http://") && !strings.HasPrefix(c.adminURL, "https://") {
		c.adminURL = "http://" + c.adminURL
	}
	user := os.Getenv("USER")
	cl := &admin.Client{BaseURL: c.adminURL, Token: tok, Actor: user}
	if (c.cert == "") != (c.key == "") {
		return nil, fmt.Errorf("%w: --admin-cert and --admin-key go together", errUsage)
	}
	if c.caFile != "" || c.cert != "" {
		if !strings.HasPrefix(c.adminURL, "https://") {
			return nil, fmt.Errorf("%w: --admin-ca and --admin-cert need an https:// --admin URL", errUsage)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pool, err := tlsutil.LoadPool(c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--admin-ca: %w", err)
			}
			tc.RootCAs = pool
		}
		if c.cert != "" {
			kp, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, fmt.Errorf("--admin-cert: %w", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		cl.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	}
	return cl, nil
}

func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	return fs, &c
}

// tagFlag collects repeated --tag k=v.
type tagFlag map[string]string

func (t tagFlag) String() string { return fmt.Sprint(map[string]string(t)) }
func (t tagFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("tag %q: want key=value", s)
	}
	t[k] = v
	return nil
}

func clientCmd(cmd, sub string, args []string, stdout, stderr io.Writer) error {
	name := cmd + " " + sub
	fs, cf := newFlagSet(name, stderr)
	var run func(ctx context.Context, c *admin.Client) error
	nargs := 0
	switch name {
	case "round start":
		req := admin.StartRequest{Tags: map[string]string{}}
		var deadline, evalTimeout time.Duration
		var lr, mu, clip, topk float64
		var strategyCfg string
		fs.StringVar(&req.Model, "model", "mlp", "model module name")
		fs.StringVar(&req.Strategy, "strategy", "fedavg", "fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmed_mean, krum, multikrum, bulyan")
		fs.StringVar(&strategyCfg, "strategy-config", "", `strategy hyperparameters as JSON, e.g. {"server_lr":0.1}`)
		fs.Float64Var(&req.Fraction, "fraction", 1, "fraction of eligible online devices per round")
		u32(fs, &req.MinClients, "min-clients", 1, "minimum devices per round")
		u32(fs, &req.MaxClients, "max-clients", 0, "maximum devices per round (0: no limit)")
		u32(fs, &req.Quorum, "quorum", 0, "updates needed to commit (0: min-clients)")
		fs.Var(tagFlag(req.Tags), "tag", "only devices with this tag, key=value (repeatable)")
		u32(fs, &req.Epochs, "epochs", 1, "local epochs")
		u32(fs, &req.BatchSize, "batch-size", 32, "local batch size")
		fs.Float64Var(&lr, "lr", 0.05, "local learning rate")
		fs.Float64Var(&mu, "mu", 0, "FedProx proximal mu")
		fs.Float64Var(&clip, "clip-norm", 0, "client-side L2 clipping of the delta")
		fs.StringVar(&req.Codec, "codec", "float32", "update codec: float32, float16, int8, topk")
		fs.Float64Var(&topk, "topk-fraction", 0, "fraction of coordinates sent with --codec topk")
		u32(fs, &req.MaxSamples, "max-samples", 0, "local samples per round (0: all)")
		fs.DurationVar(&deadline, "deadline", time.Minute, "training deadline per round")
		u32(fs, &req.Rounds, "rounds", 1, "rounds to commit (0: until --target-accuracy)")
		fs.Float64Var(&req.TargetAccuracy, "target-accuracy", 0, "stop at this evaluation accuracy")
		fs.Uint64Var(&req.Seed, "seed", 0, "selection and training seed")
		fs.BoolVar(&req.FederatedEval, "federated-eval", false, "evaluate each new model on the selected devices")
		fs.BoolVar(&req.ServerEval, "server-eval", false, "evaluate each new model on the server's test set (serve --test-data)")
		fs.DurationVar(&evalTimeout, "eval-timeout", 30*time.Second, "evaluation deadline")
		u32(fs, &req.MaxFailed, "max-failed-rounds", 0, "consecutive failed rounds that end the run (0: 3)")
		fs.BoolVar(&req.Reinit, "reinit", false, "start from fresh initial weights")
		fs.BoolVar(&req.Secure, "secure", false, "secure aggregation (SecAgg+): the coordinator learns only the sum; sum-based strategies only")
		fs.Float64Var(&req.SecureThreshold, "secure-threshold", 0.6, "with --secure: Shamir threshold as a fraction of each device's share holders")
		fs.IntVar(&req.SecureDegree, "secure-degree", 0, "with --secure: neighbours per device, even (0: complete graph)")
		fs.Float64Var(&req.SecureClipRange, "secure-clip", 1, "with --secure: bound of each delta coordinate before quantization")
		fs.Float64Var(&req.DPNoiseMultiplier, "dp-noise-multiplier", 0, "differential privacy (DP-FedAvg): Gaussian noise std on the sum is this times --dp-clip (0: off)")
		fs.Float64Var(&req.DPClip, "dp-clip", 0, "with --dp-noise-multiplier: L2 bound of each update; the devices clip to it")
		fs.Float64Var(&req.DPDelta, "dp-delta", 0, "with --dp-noise-multiplier: the delta at which epsilon is reported (0: 1e-5)")
		fs.Float64Var(&req.DPSamplingRate, "dp-sampling-rate", 0, "with --dp-noise-multiplier: per-round participation probability the accountant assumes (0: --fraction)")
		run = func(ctx context.Context, c *admin.Client) error {
			if !req.Secure {
				req.SecureThreshold, req.SecureDegree, req.SecureClipRange = 0, 0, 0
			}
			req.DeadlineMs, req.EvalTimeoutMs = deadline.Milliseconds(), evalTimeout.Milliseconds()
			req.LearningRate, req.ProximalMu, req.ClipNorm, req.TopKFraction = float32(lr), float32(mu), float32(clip), float32(topk)
			if strategyCfg != "" {
				req.StrategyConfig = json.RawMessage(strategyCfg)
			}
			doc, err := c.StartRun(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "run %d started: model %s, strategy %s, %d rounds\n", doc.RunID, doc.Model, doc.Strategy, doc.Rounds)
			return nil
		}
	case "round status":
		asJSON := fs.Bool("json", false, "print the status document (schema "+admin.StatusSchema+")")
		run = func(ctx context.Context, c *admin.Client) error {
			if *asJSON {
				raw, err := c.StatusRaw(ctx)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(stdout, string(raw))
				return err
			}
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			printStatus(stdout, st)
			return nil
		}
	case "round watch":
		interval := fs.Duration("interval", time.Second, "poll interval")
		run = func(ctx context.Context, c *admin.Client) error { return watch(ctx, c, *interval, stdout) }
	case "round stop":
		reason := fs.String("reason", "", "reason recorded in the audit log")
		run = func(ctx context.Context, c *admin.Client) error {
			doc, err := c.StopRun(ctx, *reason)
			if err == nil {
				fmt.Fprintf(stdout, "run %d %s\n", doc.RunID, doc.State)
			}
			return err
		}
	case "round list":
		run = func(ctx context.Context, c *admin.Client) error {
			runs, err := c.Runs(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tSTATE\tMODEL\tSTRATEGY\tCOMMITTED\tVERSION\tACCURACY\tREASON")
			for _, r := range runs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", r.RunID, r.State, r.Model, r.Strategy, r.RoundsCommitted, r.Rounds, r.ModelVersion, acc(r.HasAccuracy, r.LastAccuracy), r.Reason)
			}
			return tw.Flush()
		}
	case "models list":
		run = func(ctx context.Context, c *admin.Client) error {
			doc, err := c.Models(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tPARAMS\tINPUT\tCLASSES\tBYTES\tBUILTIN\tSHA256")
			for _, m := range doc.Modules {
				fmt.Fprintf(tw, "%s\t%d\t%v\t%d\t%d\t%v\t%s\n", m.Name, m.Params, m.Input, m.Classes, m.Bytes, m.Builtin, m.WasmHash[:16])
			}
			fmt.Fprintln(tw, "\nVERSION\tMODEL\tPARENT\tRUN\tROUND\tSTRATEGY\tCLIENTS\tTRAIN-ACC\tCREATED")
			for _, v := range doc.Versions {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%d\t%.4f\t%s\n", v.Version, v.Model, v.ParentVersion, v.RunID, v.RoundID, v.Strategy, v.Participants, v.TrainAccuracy, time.UnixMilli(v.CreatedUnixMs).UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		}
	case "models add":
		nargs = 2
		run = func(ctx context.Context, c *admin.Client) error {
			wasm, err := os.ReadFile(fs.Arg(1))
			if err != nil {
				return err
			}
			m, err := c.AddModel(ctx, fs.Arg(0), wasm)
			if err == nil {
				fmt.Fprintf(stdout, "model %s added: %d parameters, input %v, %d classes\n", m.Name, m.Params, m.Input, m.Classes)
			}
			return err
		}
	case "models rollback":
		nargs = 1
		run = func(ctx context.Context, c *admin.Client) error {
			v, err := strconv.ParseUint(fs.Arg(0), 10, 64)
			if err != nil {
				return fmt.Errorf("%w: version %q is not a number", errUsage, fs.Arg(0))
			}
			doc, err := c.Rollback(ctx, v)
			if err == nil {
				fmt.Fprintf(stdout, "published version %d with the weights of version %d\n", doc.Version, doc.ParentVersion)
			}
			return err
		}
	case "devices list":
		run = func(ctx context.Context, c *admin.Client) error {
			devs, err := c.Devices(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tSTATE\tONLINE\tARCH\tSAMPLES\tTAGS\tLAST SEEN")
			for _, d := range devs {
				seen := "-"
				if d.LastSeenUnixMs > 0 {
					seen = time.UnixMilli(d.LastSeenUnixMs).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\t%v\t%s\n", d.DeviceID, d.State, d.Online, d.Arch, d.SampleCount, d.Tags, seen)
			}
			return tw.Flush()
		}
	case "devices add":
		nargs = 1
		run = func(ctx context.Context, c *admin.Client) error {
			r, err := c.AddDevice(ctx, fs.Arg(0))
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "device %s registered; shown once, store them in the agent's config:\n", r.DeviceID)
			fmt.Fprintf(stdout, "  enrollment token: %s\n", r.Token)
			if r.Password == "" {
				// The daemon uses an external broker, which keeps the accounts.
				return externalDeviceAccount(stdout, cf.data, r.DeviceID)
			}
			fmt.Fprintf(stdout, "  broker username:  %s\n  broker password:  %s\n", r.Username, r.Password)
			return nil
		}
	case "devices approve":
		nargs = 1
		run = func(ctx context.Context, c *admin.Client) error {
			d, err := c.ApproveDevice(ctx, fs.Arg(0))
			if err == nil {
				fmt.Fprintf(stdout, "device %s %s\n", d.DeviceID, d.State)
			}
			return err
		}
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := fs.Parse(pos); err != nil { // leaves pos as fs.Args()
		return err
	}
	if fs.NArg() != nargs {
		return fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, name, nargs, fs.NArg())
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if name != "round watch" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cf.timeout)
		defer cancel()
	}
	return run(ctx, c)
}

func u32(fs *flag.FlagSet, p *uint32, name string, def uint32, usage string) {
	*p = def
	fs.Func(name, fmt.Sprintf("%s (default %d)", usage, def), func(s string) error {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return err
		}
		*p = uint32(v)
		return nil
	})
}

func acc(has bool, a float64) string {
	if !has {
		return "-"
	}
	return fmt.Sprintf("%.4f", a)
}

func printStatus(w io.Writer, st *admin.StatusDoc) {
	fmt.Fprintf(w, "model version %d, %d devices online\n", st.ModelVersion, st.DevicesOnline)
	if st.Run == nil {
		fmt.Fprintln(w, "no run yet")
		return
	}
	r := st.Run
	fmt.Fprintf(w, "run %d: %s, model %s, strategy %s, %d/%d rounds committed, accuracy %s %s\n",
		r.RunID, r.State, r.Model, r.Strategy, r.RoundsCommitted, r.Rounds, acc(r.HasAccuracy, r.LastAccuracy), r.Reason)
	if d := r.DP; d != nil {
		fmt.Fprintf(w, "differential privacy: epsilon %.4g at delta %g after %d rounds (noise multiplier %g, clip %g, sampling rate %g)\n",
			d.Epsilon, d.Delta, d.RoundsCharged, d.NoiseMultiplier, d.Clip, d.SamplingRate)
	}
	if rd := st.Round; rd != nil {
		fmt.Fprintf(w, "round %d: %s, %d/%d updates", rd.RoundID, rd.Phase, rd.Accepted, rd.Selected)
		if rd.Dropped > 0 {
			fmt.Fprintf(w, ", %d dropped", rd.Dropped)
		}
		if rd.DeadlineUnixMs > 0 {
			left := time.Duration(rd.DeadlineUnixMs-st.NowUnixMs) * time.Millisecond
			fmt.Fprintf(w, ", deadline in %v", left.Round(time.Second))
		}
		fmt.Fprintln(w)
	}
	for _, h := range st.History {
		state := "ok"
		if h.Failed {
			state = "failed"
		}
		dropped := ""
		if h.Dropped > 0 {
			dropped = fmt.Sprintf(" (%d dropped)", h.Dropped)
		}
		fmt.Fprintf(w, "  round %d: %s, version %d, %d/%d updates%s, accuracy %.4f, train loss %.4f\n", h.RoundID, state, h.ModelVersion, h.Accepted, h.Selected, dropped, h.Accuracy, h.TrainLoss)
	}
	if len(st.Rejections) > 0 {
		fmt.Fprintf(w, "rejections: %v\n", st.Rejections)
	}
}

// watch follows the run: a progress bar of the current round's updates and
// one line per finished round, until the run ends.
func watch(ctx context.Context, c *admin.Client, interval time.Duration, w io.Writer) error {
	seen := 0
	var bar *progress.Bar
	var barRound uint64
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if st.Run == nil {
			fmt.Fprintln(w, "no run")
			return nil
		}
		for ; seen < len(st.History); seen++ {
			if bar != nil {
				bar.Finish()
				bar = nil
			}
			h := st.History[seen]
			state := "committed"
			if h.Failed {
				state = "failed"
			}
			fmt.Fprintf(w, "round %d %s: version %d, %d/%d updates, accuracy %.4f (rounds done %d/%d)\n",
				h.RoundID, state, h.ModelVersion, h.Accepted, h.Selected, h.Accuracy, st.Run.RoundsCommitted, st.Run.Rounds)
		}
		if st.Run.State != "running" {
			if bar != nil {
				bar.Finish()
			}
			fmt.Fprintf(w, "run %d %s: %s\n", st.Run.RunID, st.Run.State, st.Run.Reason)
			return nil
		}
		if rd := st.Round; rd != nil && rd.Selected > 0 {
			if bar == nil || barRound != rd.RoundID {
				if bar != nil {
					bar.Finish()
				}
				bar, barRound = progress.New(w, fmt.Sprintf("round %d", rd.RoundID), rd.Selected), rd.RoundID
			}
			bar.Update(rd.Accepted, rd.Phase)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func keyCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "fedge-data", "data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	key, _, err := server.LoadOrCreateKey(filepath.Join(*data, server.KeyFile))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, server.PublicKeyHex(key))
	return err
}

func auditCmd(args []string, stdout, stderr io.Writer) error {
	fs, cf := newFlagSet("audit", stderr)
	after := fs.Uint64("after", 0, "show entries after this sequence number")
	limit := fs.Int("limit", 100, "entries to show (1..1000)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cf.timeout)
	defer cancel()
	es, err := c.Audit(ctx, *after, *limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tDETAIL")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, time.UnixMilli(e.UnixMs).UTC().Format(time.RFC3339), e.Actor, e.Action, e.Target, e.Detail)
	}
	return tw.Flush()
}

// parseInterspersed parses flags that may follow positional arguments
// ("devices add ID --admin URL") and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
