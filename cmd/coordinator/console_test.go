package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/internal/mosquittotest"
	"github.com/fedge-dev/fedge/internal/tlsutil"
)

// screenshotDir is where TestConsoleBrowser writes its screenshots:
// $FEDGE_SCREENSHOT_DIR if set, else the test's artifact directory (kept
// with go test -artifacts, a temporary directory otherwise).
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("FEDGE_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// chromium finds Debian's Chromium; without it the test skips unless
// FEDGE_REQUIRE_EXTERNAL is set (make test sets it), then it fails.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(mosquittotest.RequireEnv) == "" {
		t.Skip("chromium not installed (Debian package chromium); set FEDGE_REQUIRE_EXTERNAL to make this fatal")
	}
	t.Fatal("chromium not installed (Debian package chromium; scripts/deps.sh installs it)")
	return ""
}

// spkiHash is the base64 SHA-256 of a certificate's public key, for
// Chromium's --ignore-certificate-errors-spki-list: it trusts exactly the
// test's server key, nothing else.
func spkiHash(t *testing.T, certFile string) string {
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatal("no PEM in " + certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browser drives one headless Chromium tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval runs a JavaScript expression and decodes its value into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// js runs a JavaScript statement for its effect.
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr+"; null"))
		return err
	})
}

// waitJS polls a JavaScript expression until it is true.
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("Boolean("+expr+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText + "\nbanner: " + document.getElementById("banner").innerText`))
			b.t.Fatalf("waiting for %s (%s): %v; page text:\n%s", what, expr, err, page)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return s
}

// screenshot writes the viewport as name.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	b.run(js(`window.scrollTo(0, 0); document.querySelectorAll(".scroll").forEach(e => e.scrollLeft = 0)`))
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("browser: screenshot: %v", err)
	}
	p := filepath.Join(b.shot, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s (%d bytes)", p, len(png))
}

func (b *browser) goPage(page, heading string) {
	b.t.Helper()
	b.run(js(`location.hash = "#` + page + `"`))
	b.waitJS(page+" page", `!document.getElementById("page-`+page+`").hidden && document.title.endsWith(`+"`"+heading+"`"+`)`, 10*time.Second)
}

func (b *browser) login(token string) {
	b.t.Helper()
	b.waitJS("login page", `!document.getElementById("page-login").hidden`, 10*time.Second)
	b.run(chromedp.SetValue(chromedp.ID("login-token"), token), chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
}

// TestConsoleBrowser is the console's end-to-end test: a real coordinator
// (admin listener on TLS) and three real agents as processes over the
// embedded broker, and Debian's Chromium driven headless. It signs in
// (after a wrong token), starts a run from the form (after an invalid
// one), watches the accuracy chart gain points without a reload, meets an
// API error (rollback during a run), stops the run, rolls a version back,
// reads the audit log, and checks a viewer cannot start a run. Screenshots
// of every page, laptop and phone, go to screenshotDir.
func TestConsoleBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped under -short (make test-short); make test runs it")
	}
	chrome := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pki, err := tlsutil.WritePKI(filepath.Join(t.TempDir(), "pki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsutil.LoadPool(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr := freeAddr(t)
	f := startFleetWith(t, ctx, []string{"--listen", brokerAddr, "--admin-tls-cert", pki.ServerCert, "--admin-tls-key", pki.ServerKey},
		&adminTLS{caFile: pki.CA, cfg: &tls.Config{RootCAs: pool}})
	base := f.c.BaseURL

	// The admin listener speaks TLS only: plain HTTP gets no API answer.
	plain := "http://" + strings.TrimPrefix(base, "https://")
	req, _ := http.NewRequestWithContext(ctx, "GET", plain+"/v1/rounds/status", nil)
	req.Header.Set("Authorization", "Bearer "+f.c.Token)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), admin.StatusSchema) {
			t.Fatalf("plain HTTP to the TLS admin listener: %d %q", resp.StatusCode, body)
		}
	}
	// The CLI reaches it over HTTPS with --admin-ca.
	if out := f.cli(t, "round", "status"); !strings.Contains(out, "no run yet") {
		t.Fatalf("round status over HTTPS: %s", out)
	}

	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
	alice := lastLine(cli(t, f.coord, "admins", "add", "alice", "--role", "operator", "--data", f.data))
	vera := lastLine(cli(t, f.coord, "admins", "add", "vera", "--role", "viewer", "--data", f.data))

	const n = 3
	f.addAgents(t, ctx, n, embeddedBroker(brokerAddr))

	// Registered devices that never connect: offline in the fleet page,
	// and more audit entries to page through.
	for i := range 4 {
		if _, err := f.c.AddDevice(ctx, fmt.Sprintf("spare-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, pki.ServerCert)))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	b := &browser{t: t, ctx: bctx, base: base, shot: screenshotDir(t)}
	b.run(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/console/"))
	b.screenshot("login")

	// 1. A wrong token: a clear message, nothing stored.
	b.login("fedge_adm_not-a-real-token")
	b.waitJS("wrong-token message", `document.getElementById("login-error").innerText.includes("refused this token")`, 10*time.Second)
	t.Logf("wrong token: %q", b.text("#login-error"))
	b.screenshot("login-wrong-token")

	// 2. Alice (operator) signs in; the token is in the session, not the URL.
	b.login(alice)
	b.waitJS("runs page", `!document.getElementById("page-runs").hidden && document.getElementById("who").innerText === "alice (operator)"`, 10*time.Second)
	href, stored := eval[string](b, `location.href`), eval[string](b, `sessionStorage.getItem("fedge.admin.token")`)
	if strings.Contains(href, alice) || stored != alice {
		t.Fatalf("token placement: url %q, session has it: %v", href, stored == alice)
	}

	// 3. Fleet: the three agents online.
	b.goPage("fleet", "Fleet")
	b.waitJS("3 devices online, 4 offline", `[...document.querySelectorAll("#fleet-devices tbody tr")].filter(r => r.innerText.includes("online")).length === 3 && [...document.querySelectorAll("#fleet-devices tbody tr")].filter(r => r.innerText.includes("offline")).length === 4`, 15*time.Second)
	b.screenshot("fleet")

	// 4. An invalid run form: the API's own message, in the page.
	b.goPage("new", "New run")
	b.waitJS("model list", `document.querySelectorAll("#f-model option").length > 0`, 10*time.Second)
	bad := admin.StartRequest{Model: "logreg", Strategy: "fedavg", Codec: "float32", Rounds: 40, MinClients: 3, Fraction: 5,
		Epochs: 1, BatchSize: 10, LearningRate: 0.05, DeadlineMs: 60000, ServerEval: true}
	_, apiErr := f.c.StartRun(ctx, bad)
	var ae *admin.APIError
	if !errors.As(apiErr, &ae) || ae.Status != 400 {
		t.Fatalf("API accepted fraction 5: %v", apiErr)
	}
	b.run(chromedp.SetValue(chromedp.ID("f-model"), "logreg"), chromedp.SetValue(chromedp.ID("f-rounds"), "40"),
		chromedp.SetValue(chromedp.ID("f-min_clients"), "3"), chromedp.SetValue(chromedp.ID("f-fraction"), "5"),
		chromedp.SetValue(chromedp.ID("f-batch_size"), "10"), chromedp.Click(chromedp.ID("f-server_eval")),
		chromedp.Click(chromedp.ID("run-submit")))
	b.waitJS("invalid-form message", `document.getElementById("run-error").innerText.includes(`+jsString(ae.Message)+`)`, 10*time.Second)
	t.Logf("invalid form: %q (API: %q)", b.text("#run-error"), ae.Message)
	b.screenshot("new-run-invalid")
	// A value that is not a number is caught before the API.
	b.run(chromedp.SetValue(chromedp.ID("f-fraction"), "lots"), chromedp.Click(chromedp.ID("run-submit")))
	b.waitJS("not-a-number message", `document.getElementById("run-error").innerText.includes("Fraction of devices: \"lots\" is not a number")`, 10*time.Second)

	// 5. A valid run from the form; the accuracy chart gains points with
	// no reload (a marker set on window survives).
	b.run(chromedp.SetValue(chromedp.ID("f-fraction"), "1"), chromedp.Click(chromedp.ID("run-submit")))
	b.waitJS("runs page after start", `!document.getElementById("page-runs").hidden && document.getElementById("run-current").innerText.includes("running")`, 15*time.Second)
	b.run(js(`window.fedgeNoReload = 1`))
	b.waitJS("2 accuracy points", `Number(document.getElementById("chart-accuracy").dataset.points) >= 2`, 3*time.Minute)
	b.waitJS("3 accuracy points", `Number(document.getElementById("chart-accuracy").dataset.points) >= 3 && window.fedgeNoReload === 1`, 3*time.Minute)
	circles := eval[int](b, `document.querySelectorAll("#chart-accuracy circle.pt").length`)
	if circles < 3 {
		t.Fatalf("accuracy chart has %d points", circles)
	}
	b.screenshot("runs")
	b.run(chromedp.Click(chromedp.CSS(`input[name="xaxis"][value="time"]`)))
	b.waitJS("time axis", `document.getElementById("chart-accuracy").innerHTML.includes("seconds of rounds")`, 5*time.Second)
	b.run(chromedp.Click(chromedp.CSS(`input[name="xaxis"][value="round"]`)))

	// 6. An API error: a rollback while the run is active is a 409.
	b.goPage("models", "Models")
	b.waitJS("rollback button for v1", `document.querySelector('#models-versions button[data-version="1"]') !== null`, 10*time.Second)
	b.run(chromedp.Click(chromedp.CSS(`#models-versions button[data-version="1"]`)),
		chromedp.Click(chromedp.CSS(`#models-versions button.danger`)))
	b.waitJS("API error message", `document.getElementById("models-error").innerText.includes("Rollback failed") && document.getElementById("models-error").innerText.includes("is active")`, 10*time.Second)
	t.Logf("API error: %q", b.text("#models-error"))
	b.screenshot("models-api-error")

	// 7. Stop the run.
	b.goPage("runs", "Runs")
	b.waitJS("stop button", `!document.getElementById("stop-form").hidden`, 10*time.Second)
	b.run(chromedp.SetValue(chromedp.ID("stop-reason"), "stopped from the console test"), chromedp.Click(chromedp.ID("stop-button")))
	b.waitJS("run stopped", `document.querySelector("#runs-list tbody").innerText.includes("stopped from the console test")`, 30*time.Second)
	b.screenshot("runs-stopped")
	st, err := f.c.Status(ctx)
	if err != nil || st.Run == nil || st.Run.State != "stopped" {
		t.Fatalf("after stop: %+v %v", st, err)
	}
	committed := len(st.History)

	// 8. Roll back to version 1.
	b.goPage("models", "Models")
	b.waitJS("rollback button for v1", `document.querySelector('#models-versions button[data-version="1"]') !== null`, 10*time.Second)
	b.run(chromedp.Click(chromedp.CSS(`#models-versions button[data-version="1"]`)),
		chromedp.Click(chromedp.CSS(`#models-versions button.danger`)))
	b.waitJS("rollback done", `document.getElementById("models-msg").innerText.includes("with the weights of v1")`, 15*time.Second)
	b.screenshot("models")
	m, err := f.c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newest := m.Versions[0]
	for _, v := range m.Versions {
		if v.Version > newest.Version {
			newest = v
		}
	}
	if newest.Strategy != "rollback" || newest.ParentVersion != 1 {
		t.Fatalf("newest version after rollback: %+v", newest)
	}
	t.Logf("run stopped after %d rounds; rollback published v%d", committed, newest.Version)

	// 9. The audit log names alice, the credential's owner.
	b.goPage("audit", "Audit log")
	b.waitJS("audit entries by alice", `["round.start", "round.stop", "models.rollback"].every(a => [...document.querySelectorAll("#audit-table tbody tr")].some(r => r.innerText.includes("cred:alice") && r.innerText.includes(a)))`, 10*time.Second)
	b.screenshot("audit")
	// Paging: 10 per page, the older page holds the entries before.
	b.run(chromedp.SetValue(chromedp.ID("audit-size"), "10"), js(`document.getElementById("audit-size").dispatchEvent(new Event("change"))`))
	b.waitJS("latest 10 entries", `document.querySelectorAll("#audit-table tbody tr").length === 10`, 10*time.Second)
	top := eval[int](b, `Number(document.querySelector("#audit-table tbody tr td").innerText)`)
	b.run(chromedp.Click(chromedp.ID("audit-older")))
	b.waitJS("older page", `Number(document.querySelector("#audit-table tbody tr td").innerText) === `+fmt.Sprint(top-10), 10*time.Second)
	b.run(chromedp.Click(chromedp.ID("audit-newer")))
	b.waitJS("newer page", `Number(document.querySelector("#audit-table tbody tr td").innerText) === `+fmt.Sprint(top), 10*time.Second)
	es, err := f.c.Audit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	byAlice := map[string]bool{}
	for _, e := range es {
		if e.Actor == "cred:alice" {
			byAlice[e.Action] = true
		}
	}
	if !byAlice["round.start"] || !byAlice["round.stop"] || !byAlice["models.rollback"] {
		t.Fatalf("audit log by cred:alice: %v", byAlice)
	}

	// 10. A phone.
	b.run(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []struct{ page, heading string }{{"runs", "Runs"}, {"fleet", "Fleet"}, {"new", "New run"}, {"models", "Models"}, {"audit", "Audit log"}} {
		b.goPage(p.page, p.heading)
		time.Sleep(500 * time.Millisecond) // let the page's first load render
		overflow := eval[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 1`)
		if overflow {
			t.Errorf("%s page is wider than a 390 px phone screen", p.page)
		}
		b.screenshot("phone-" + p.page)
	}
	b.run(chromedp.EmulateViewport(1280, 800))

	// 11. Vera (viewer) cannot start a run: not in the page, not through the API.
	b.run(chromedp.Click(chromedp.ID("signout")))
	b.login(vera)
	b.waitJS("vera signed in", `document.getElementById("who").innerText === "vera (viewer)"`, 10*time.Second)
	b.goPage("new", "New run")
	b.waitJS("viewer message", `document.getElementById("new-role").innerText.includes("cannot start runs") && document.getElementById("run-submit").disabled`, 10*time.Second)
	b.screenshot("new-run-viewer")
	// Even with the button forced on, the API refuses her.
	b.run(js(`document.getElementById("run-submit").disabled = false`), chromedp.Click(chromedp.ID("run-submit")))
	b.waitJS("403 in the page", `document.getElementById("run-error").innerText.includes("has role viewer; this needs operator")`, 10*time.Second)
	vc := &admin.Client{BaseURL: base, Token: vera, HTTP: f.c.HTTP}
	if _, err := vc.StartRun(ctx, admin.StartRequest{Model: "logreg", MinClients: 3}); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("viewer start run: %v", err)
	}

	// 12. Revoking vera signs her tab out on its next request.
	cli(t, f.coord, "admins", "revoke", "vera", "--data", f.data)
	b.goPage("runs", "Runs")
	b.waitJS("revoked session signed out", `!document.getElementById("page-login").hidden && document.getElementById("login-error").innerText.includes("refused")`, 10*time.Second)
	b.screenshot("revoked")
	fmt.Fprintf(os.Stderr, "console screenshots in %s\n", b.shot)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
