package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Twenty rollbacks of twenty services while the leader is killed (SIGKILL)
// every 10 s (at most 8 times) and a new replica joins each time: every incident closes, the
// undo is done once per incident, each side effect is attempted by one
// holder, and the time from a kill to the resume of each orphaned run is
// measured.
func TestServeLeaderChurnDuringManyRuns(t *testing.T) {
	parallel(t)
	const runs = 20
	ctx := context.Background()
	var cfg strings.Builder
	cfg.WriteString("apiVersion: rollback/v1\nkind: Config\nservices:\n")
	var nss []string
	for i := 0; i < runs; i++ {
		ns := namespace(t)
		deploy(t, ns, "v1.1.5", "v1.2.0")
		d := getDeployment(t, ns)
		d.Spec.MinReadySeconds = 8 // each run spans a kill or two
		if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		nss = append(nss, ns)
		fmt.Fprintf(&cfg, "  svc%02d:\n    kubernetes: {namespace: %s, name: %s}\n", i, ns, app)
	}
	cfgFile := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn, err := pg.CreateDB(ctx, fmt.Sprintf("churn_%d", time.Now().UnixNano()%1e6))
	if err != nil {
		t.Fatal(err)
	}
	leaseNS := nss[0]
	args := []string{"--leader-elect", "--lease-namespace", leaseNS, "--lease-duration", "4s"}
	replicas := []*served{startServe(t, dsn, cfgFile, args...), startServe(t, dsn, cfgFile, args...)}
	// Either may win the first election.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if replicas[0].logged(`"msg":"leading"`) || replicas[1].logged(`"msg":"leading"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica leads after 30s; their logs:\n%s\n--\n%s", strings.Join(replicas[0].lines(), "\n"), strings.Join(replicas[1].lines(), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < runs; i++ {
		if code, body := replicas[i%2].api(t, "POST", "/api/v1/runs", fmt.Sprintf(`{"service":"svc%02d"}`, i)); code != 202 && code != 200 {
			t.Fatalf("run %d: %d %s", i, code, body)
		}
	}
	leader := func() *served {
		l, err := cs.CoordinationV1().Leases(leaseNS).Get(ctx, "rollback-serve", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return nil
		}
		for _, r := range replicas {
			if r.cmd.ProcessState == nil && strings.HasSuffix(*l.Spec.HolderIdentity, fmt.Sprint(":", r.cmd.Process.Pid)) {
				return r
			}
		}
		return nil
	}
	closedAll := func(s *served) (int, []incidentJSON) {
		_, b := s.api(t, "GET", "/api/v1/incidents?limit=100", "")
		var incs []incidentJSON
		_ = json.Unmarshal(b, &incs)
		n := 0
		for _, inc := range incs {
			if inc.Status == "closed" {
				n++
			}
		}
		return n, incs
	}
	var kills []time.Time
	// At most maxKills kills, every 10 s, then the replicas left finish:
	// a loaded machine must not have its leader killed faster than a run
	// can make progress.
	const maxKills = 8
	deadline := time.Now().Add(6 * time.Minute)
	var incs []incidentJSON
	for time.Now().Before(deadline) {
		alive := replicas[len(replicas)-1]
		n, all := closedAll(alive)
		incs = all
		if n == runs {
			break
		}
		time.Sleep(10 * time.Second)
		if len(kills) >= maxKills {
			continue
		}
		if l := leader(); l != nil {
			_ = l.cmd.Process.Signal(syscall.SIGKILL)
			_ = l.cmd.Wait()
			kills = append(kills, time.Now())
		}
		replicas = append(replicas, startServe(t, dsn, cfgFile, args...))
	}
	if n, _ := closedAll(replicas[len(replicas)-1]); n != runs {
		t.Fatalf("%d of %d incidents closed after %d leader kills: %+v", n, runs, len(kills), incs)
	}
	if len(kills) == 0 {
		t.Fatal("every run closed before the first leader kill: nothing here tested the churn")
	}
	// Each incident: one undo, each side effect by one holder.
	var resumes []float64
	for _, inc := range incs {
		_, b := replicas[len(replicas)-1].api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
		var v struct {
			Events []struct{ Step, Phase, Key, Message string } `json:"events"`
		}
		_ = json.Unmarshal(b, &v)
		undone := 0
		holders := map[string]map[string]bool{}
		for _, ev := range v.Events {
			if ev.Step == "kube-undo" && ev.Phase == "done" {
				undone++
			}
			if ev.Phase == "intent" {
				effect, _, _ := strings.Cut(strings.TrimPrefix(ev.Key, "intent:"), "#")
				if holders[effect] == nil {
					holders[effect] = map[string]bool{}
				}
				holders[effect][ev.Message] = true
			}
		}
		if undone != 1 {
			t.Errorf("%s: kube-undo done %d times, want 1", inc.ID, undone)
		}
		for e, hs := range holders {
			if len(hs) > 1 {
				t.Errorf("%s: side effect %s by %d holders", inc.ID, e, len(hs))
			}
		}
	}
	for _, r := range replicas {
		for _, l := range r.lines() {
			if !strings.Contains(l, `"msg":"resuming an orphaned incident"`) {
				continue
			}
			var e struct{ Time time.Time }
			_ = json.Unmarshal([]byte(l), &e)
			// the last kill before this resume
			var k time.Time
			for _, kt := range kills {
				if kt.Before(e.Time) {
					k = kt
				}
			}
			if !k.IsZero() {
				resumes = append(resumes, e.Time.Sub(k).Seconds())
			}
		}
	}
	for _, ns := range nss {
		if got := runningImage(t, ns); got != image("v1.1.5") {
			t.Errorf("%s runs %s, want %s", ns, got, image("v1.1.5"))
		}
	}
	sort.Float64s(resumes)
	med, max := 0.0, 0.0
	if len(resumes) > 0 {
		med, max = resumes[len(resumes)/2], resumes[len(resumes)-1]
	}
	t.Logf("MEASURE %d runs, leader killed every 10 s (%d kills, lease 4 s): all closed, kube-undo once each; %d resumes of orphaned runs started, kill → resume median %.1fs, max %.1fs",
		runs, len(kills), len(resumes), med, max)
}
