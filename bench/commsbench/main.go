// Command commsbench measures whether communication can delay recovery:
// the time from 'rollback run' starting to the Kubernetes rollback being
// done, with no Slack/PagerDuty/webhook/flag configured and with every one
// of them hung (accepting connections, never answering). It runs against
// the sandbox named by $KUBECONFIG (scripts/bench.sh starts it) and
// prints a table.
//
//	go run ./bench/commsbench -runs 5 -rollback bin/rollback
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/outbound/outboundtest"
	"github.com/rollback-dev/rollback/internal/store"
)

func main() {
	runs := flag.Int("runs", 5, "runs per case")
	bin := flag.String("rollback", "bin/rollback", "the rollback binary")
	example := flag.String("example", "examples/transaction-service.yaml", "the Deployment to roll back")
	flag.Parse()
	if err := run(*runs, *bin, *example); err != nil {
		fmt.Fprintln(os.Stderr, "commsbench:", err)
		os.Exit(1)
	}
}

var incidentID = regexp.MustCompile(`INC-[0-9]{8}-[0-9]+`)

func run(runs int, bin, example string) error {
	hung, stop := outboundtest.Hung()
	defer stop()
	dir, err := os.MkdirTemp("", "commsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	manifest, err := os.ReadFile(example)
	if err != nil {
		return err
	}
	type sample struct{ rolledBack, whole time.Duration }
	results := map[string][]sample{}
	cases := []string{"none configured", "every endpoint hung"}
	for i := 0; i < runs; i++ {
		for _, c := range cases {
			ns := fmt.Sprintf("comms-%d-%d", i, len(results[c])+10*indexOf(cases, c))
			if err := scenario(ns, manifest); err != nil {
				return err
			}
			cfg := filepath.Join(dir, ns+".yaml")
			body := fmt.Sprintf("apiVersion: rollback/v1\nkind: Config\nservices:\n  web:\n    kubernetes: {namespace: %s, name: transaction-service}\n", ns)
			if c != "none configured" {
				u := hung
				body += fmt.Sprintf(`    notify:
      slack: {tokenEnv: SLACK_TOKEN, apiURL: %s/api}
      pagerduty: {routingKeyEnv: PD_KEY, eventsURL: %s/v2/enqueue, apiTokenEnv: PD_TOKEN, from: oncall@example.com, apiURL: %s}
      webhooks: [{name: status, format: json, url: %s/hook}]
    flag: {provider: launchdarkly, key: transaction-category, project: default, environment: production, url: %s, tokenEnv: LD_TOKEN}
`, u, u, u, u, u)
			}
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				return err
			}
			st := filepath.Join(dir, ns+".db")
			cmd := exec.Command(bin, "run", "web", "--config", cfg, "--yes", "--pagerduty-incident", "Q1BENCH")
			cmd.Env = append(os.Environ(), "ROLLBACK_STORE="+st, "SLACK_TOKEN=x", "PD_KEY=x", "PD_TOKEN=x", "LD_TOKEN=x")
			start := time.Now()
			out, err := cmd.CombinedOutput()
			whole := time.Since(start)
			if err != nil {
				return fmt.Errorf("%s: %v\n%s", c, err, out)
			}
			at, err := rolledBackAt(st, incidentID.FindString(string(out)))
			if err != nil {
				return err
			}
			results[c] = append(results[c], sample{rolledBack: at.Sub(start), whole: whole})
			_ = exec.Command("kubectl", "delete", "namespace", ns, "--wait=false").Run()
		}
	}
	fmt.Printf("\n%-60s %10s %10s %10s   (%d runs)\n", "rollback run: start -> Kubernetes rollback done", "median s", "min s", "max s", runs)
	for _, c := range cases {
		var rb, wh []float64
		for _, s := range results[c] {
			rb = append(rb, s.rolledBack.Seconds())
			wh = append(wh, s.whole.Seconds())
		}
		row("rolled back, "+c, rb)
		row("  whole run (the hung steps end at their deadlines), "+c, wh)
	}
	return nil
}

func indexOf(xs []string, x string) int {
	for i, s := range xs {
		if s == x {
			return i
		}
	}
	return -1
}

func row(name string, v []float64) {
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	fmt.Printf("%-60s %10.3f %10.3f %10.3f\n", name, med, v[0], v[len(v)-1])
}

func scenario(ns string, manifest []byte) error {
	steps := [][]string{
		{"create", "namespace", ns},
		{"apply", "-n", ns, "-f", "-"},
		{"-n", ns, "rollout", "status", "deployment/transaction-service", "--timeout=2m"},
		{"-n", ns, "set", "image", "deployment/transaction-service", "transaction-service=registry.local/transaction-service:v1.2.0"},
		{"-n", ns, "rollout", "status", "deployment/transaction-service", "--timeout=2m"},
	}
	for _, args := range steps {
		cmd := exec.Command("kubectl", args...)
		if args[0] == "apply" {
			cmd.Stdin = strings.NewReader(strings.ReplaceAll(string(manifest), "namespace: payments", "namespace: "+ns))
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// rolledBackAt is when the incident's Kubernetes step was journaled done.
func rolledBackAt(path, id string) (time.Time, error) {
	ctx := context.Background()
	s, err := store.Open(ctx, path)
	if err != nil {
		return time.Time{}, err
	}
	defer s.Close()
	evs, err := s.Events(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	for _, ev := range evs {
		if ev.Step == incident.StepKube && ev.Phase == "done" {
			return ev.Time, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: no %s done in the journal", id, incident.StepKube)
}
