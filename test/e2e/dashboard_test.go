package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	stdimage "image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser is a headless Debian Chromium driven over the DevTools protocol.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (make deps installs Debian's chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1600),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Longer than any wait of a test on the page (the approved run's is
	// 6 minutes): a browser that outlived its context would fail every
	// later check with the context's error, not the check's.
	ctx, cancelT := context.WithTimeout(ctx, 10*time.Minute)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	return ctx
}

// screenshotDir is where the dashboard's screenshots go: the repository's
// docs with ROLLBACK_SCREENSHOTS=docs (to update them), else a temp dir.
func screenshotDir(t *testing.T) string {
	if os.Getenv("ROLLBACK_SCREENSHOTS") == "docs" {
		root, _ := repoRoot()
		return filepath.Join(root, "docs", "screenshots")
	}
	return t.TempDir()
}

// colourPixels counts the pixels of img within 40 of (r, g, b) per channel.
func colourPixels(img stdimage.Image, r, g, b int) int {
	n := 0
	near := func(a, want int) bool { return a-want < 40 && want-a < 40 }
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if near(int(cr>>8), r) && near(int(cg>>8), g) && near(int(cb>>8), b) {
				n++
			}
		}
	}
	return n
}

// checkDashboard signs in to the dashboard with the API token in a real
// headless Chromium and checks what people look at: the incident in the
// list, the schedule, and on the incident's page the error-rate and p99
// chart (drawn from the real Prometheus), the 11-item checklist, the
// decision's reasons and the journal's timeline. Screenshots are kept.
func checkDashboard(t *testing.T, srv *served, incident string) {
	t.Helper()
	ctx := browser(t)
	dir := screenshotDir(t)
	_ = os.MkdirAll(dir, 0o755)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), serveToken),
		chromedp.Submit(chromedp.CSS(`form`)),
		chromedp.WaitVisible(chromedp.ID("incidents")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-incident="`+incident+`"]`)))
	if err != nil || !strings.Contains(row, "closed") || !strings.Contains(row, "v1.2.0 → v1.1.5") {
		t.Errorf("the incident's row: %q %v", row, err)
	}
	sched, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("schedule")))
	for _, want := range []string{"dry-run", "every release", "chaos", "quarterly", "fire-drill", "semi-annually"} {
		if !strings.Contains(sched, want) {
			t.Errorf("the schedule lacks %q: %q %v", want, sched, err)
		}
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "dashboard.png"), shot, 0o644)

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.url+"/incidents/"+incident), chromedp.WaitVisible(chromedp.ID("checklist"))); err != nil {
		t.Fatal(err)
	}
	// The chart is an image: wait until the browser has loaded it.
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise(r => { const i = document.getElementById('chart'); if (i.complete) r(i.naturalWidth > 0); else { i.onload = () => r(true); i.onerror = () => r(false); } })`,
		chromedp.EvalAwaitPromise))
	if err != nil || !loaded {
		t.Errorf("the chart did not load: %v", err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#checklist tbody tr`)))
	if err != nil || len(rows) != 11 {
		t.Errorf("checklist rows: %d %v, want the runbook's 11", len(rows), err)
	}
	done, _ := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#checklist tr[data-status=done]`)))
	if len(done) < 5 {
		t.Errorf("checklist items done: %d, want the run's steps", len(done))
	}
	reasons, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("reasons")))
	if !strings.Contains(reasons, "What fired?") || !strings.Contains(reasons, "TransactionErrors") {
		t.Errorf("reasons: %q", reasons)
	}
	timeline, _ := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#timeline tbody tr`)))
	if len(timeline) < 10 {
		t.Errorf("timeline rows: %d", len(timeline))
	}
	// The error-rate line (#d9534f) and the p99 line (#337ab7) are drawn:
	// many pixels of each, not just their legend swatches (48 pixels).
	// The chart runs to now, so its lines grow: reload until they are
	// long enough, with a deadline.
	var chart []byte
	for deadline := time.Now().Add(60 * time.Second); ; {
		if chart, err = chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("chart"))); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(chart))
		if err != nil {
			t.Fatalf("chart screenshot: %v", err)
		}
		red, blue := colourPixels(img, 0xd9, 0x53, 0x4f), colourPixels(img, 0x33, 0x7a, 0xb7)
		if red >= 300 && blue >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("chart pixels: error rate %d, p99 %d; want both lines drawn", red, blue)
			break
		}
		time.Sleep(time.Second)
		if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("chart"))); err != nil {
			t.Fatal(err)
		}
		_, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise(r => { const i = document.getElementById('chart'); if (i.complete) r(true); else { i.onload = () => r(true); i.onerror = () => r(false); } })`,
			chromedp.EvalAwaitPromise))
	}
	_ = os.WriteFile(filepath.Join(dir, "chart.png"), chart, 0o644)
	page, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		_ = os.WriteFile(filepath.Join(dir, "incident.png"), page, 0o644)
	}
}

// An on-call engineer acts from the dashboard: an alert's proposal is
// approved on its incident page (a form with the session's CSRF token),
// the browser lands on the run's incident, and that page follows the run
// by itself until it is closed, with the cluster back on the good version.
func TestDashboardApproveFollowsTheRun(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	// The run's rollout does not finish until the test has seen its page
	// live (a loaded machine may take longer to show it than any fixed
	// rollout lasts).
	setMinReady(t, ns, 300)
	cfg := serviceConfig(t, "ts", ns, "    automation:\n      severity: P1\n      alerts:\n        - {alertname: TransactionErrors}\n")
	st := filepath.Join(t.TempDir(), "serve.db")
	srv := startServe(t, st, cfg)
	alert := `{"version":"4","groupKey":"{}:{alertname=\"TransactionErrors\"}","status":"firing","receiver":"rollback",
"alerts":[{"status":"firing","labels":{"alertname":"TransactionErrors"},"startsAt":"` + time.Now().UTC().Format(time.RFC3339) + `","fingerprint":"e2e"}]}`
	if code, b := srv.api(t, "POST", "/hooks/alertmanager", alert); code != 202 {
		t.Fatalf("alert: %d %s", code, b)
	}
	_, b := srv.api(t, "GET", "/api/v1/incidents?service=ts&status=proposed", "")
	var props []incidentJSON
	_ = json.Unmarshal(b, &props)
	if len(props) != 1 {
		t.Fatalf("want one proposal: %s", b)
	}
	ctx := browser(t)
	var url string
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.url+"/login"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), serveToken),
		chromedp.Submit(chromedp.CSS(`form`)),
		chromedp.WaitVisible(chromedp.ID("incidents")),
		chromedp.Navigate(srv.url+"/incidents/"+props[0].ID),
		chromedp.WaitVisible(chromedp.ID("approve")),
		chromedp.Click(chromedp.ID("approve")),
	); err != nil {
		t.Fatalf("approve in the browser: %v", err)
	}
	for wait := time.Now().Add(20 * time.Second); time.Now().Before(wait); time.Sleep(200 * time.Millisecond) {
		if url, _ = chromedp.Run(ctx, chromedp.Location()); !strings.HasSuffix(url, props[0].ID) {
			break
		}
	}
	if strings.HasSuffix(url, props[0].ID) || !strings.Contains(url, "/incidents/INC-") {
		t.Fatalf("after approving the browser is at %s, want the run's incident", url)
	}
	// The page reloads itself while the run is open: nothing navigates
	// here, yet the page comes to show the incident closed.
	live := false
	for wait := time.Now().Add(20 * time.Second); !live && time.Now().Before(wait); time.Sleep(200 * time.Millisecond) {
		live, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('live') !== null`))
	}
	if !live {
		t.Error("the run's page did not say it follows the run while it was open")
	}
	setMinReady(t, ns, 0) // now the rollout finishes and the run closes
	// Up to the run's own rollout timeout (5 minutes, and its step's 30 s
	// grace): a loaded sandbox once took over 3 minutes here; the run's
	// journal below says where, if it happens again.
	deadline := time.Now().Add(6 * time.Minute)
	closed := false
	for !closed && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		closed, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('h1 .s-closed') !== null`))
		if ctx.Err() != nil {
			t.Fatalf("the browser's context ended while the test waited on the page: %v", ctx.Err())
		}
	}
	if !closed {
		// Which of the two: the run still open, or the page not following it.
		// The run's journal and serve's log say where it stood.
		_, inc := srv.api(t, "GET", "/api/v1/incidents?service=ts", "")
		run := url[strings.LastIndex(url, "/")+1:]
		var evs strings.Builder
		for _, ev := range journal(t, st, run) {
			fmt.Fprintf(&evs, "  %s %s %s %s %s\n", ev.Time.Format("15:04:05.000"), ev.Step, ev.Phase, ev.Message, ev.Evidence)
		}
		logs := srv.lines()
		logs = logs[max(0, len(logs)-60):]
		t.Fatalf("the run's page never showed it closed in 6 min (it should follow the run); the incidents by the API:\n%s\n%s's journal:\n%s\nserve's log (its end):\n%s",
			inc, run, evs.String(), strings.Join(logs, "\n"))
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the approval: %s, want %s", got, image("v1.1.5"))
	}
	done, _ := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#checklist tr[data-status=done]`)))
	if len(done) < 5 {
		t.Errorf("checklist items done on the live page: %d", len(done))
	}
}
