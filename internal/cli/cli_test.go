package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var now = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// fixture is a Deployment at v1.2.0 with v1.1.5 (marked good) behind it.
func fixture() []runtime.Object {
	lbl := map[string]string{"app": "transaction-service"}
	tmpl := func(v string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "transaction-service"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.local/transaction-service:" + v}}}}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "transaction-service", Namespace: "payments", UID: "d1", Generation: 2,
			Annotations: map[string]string{kube.RevisionAnnotation: "2"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: lbl}, Template: tmpl("v1.2.0")},
	}
	rs := func(rev int, v, cause string, mark kube.Health, replicas int32, created time.Time) *appsv1.ReplicaSet {
		ann := map[string]string{kube.RevisionAnnotation: fmt.Sprint(rev), kube.ChangeCauseAnnotation: cause}
		if mark != "" {
			ann[kube.HealthAnnotation] = string(mark)
		}
		return &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("transaction-service-%d", rev), Namespace: "payments", Labels: lbl,
				Annotations: ann, CreationTimestamp: metav1.NewTime(created),
				OwnerReferences: []metav1.OwnerReference{{UID: "d1", Controller: ptr.To(true), Kind: "Deployment", Name: d.Name}}},
			Spec:   appsv1.ReplicaSetSpec{Template: tmpl(v)},
			Status: appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas},
		}
	}
	return []runtime.Object{d,
		rs(1, "v1.1.5", "v1.1.5 — stable release", kube.Good, 0, now.Add(-72*time.Hour)),
		rs(2, "v1.2.0", "v1.2.0 — current (broken)", "", 3, now.Add(-20*time.Minute)),
	}
}

func kubeconfigFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: payments}}]
current-context: x
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runFake runs the CLI against a fake cluster holding objs.
func runFake(t *testing.T, objs []runtime.Object, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	io := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }}
	f := &Factory{IO: io, Now: func() time.Time { return now }}
	client := fake.NewClientset(objs...)
	f.NewClient = func(*rest.Config) (kubernetes.Interface, error) { return client, nil }
	root := NewRootCmd(f, "rollback")
	root.SetArgs(append(args, "--kubeconfig", kubeconfigFile(t)))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintf(&errOut, "error: %v\n", err)
	}
	return ExitCode(err), out.String(), errOut.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/cli -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestGoldenOutput(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"history", []string{"history", "deployment/transaction-service"}},
		{"history-json", []string{"history", "deployment/transaction-service", "-o", "json"}},
		{"plan", []string{"plan", "deployment/transaction-service", "-n", "payments"}},
		{"plan-yaml", []string{"plan", "deployment/transaction-service", "-o", "yaml"}},
		{"plan-configured", []string{"plan", "transaction-service", "--config", "testdata/plan-config.yaml"}},
		{"run-dry-client", []string{"run", "deploy/transaction-service", "--dry-run=client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runFake(t, fixture(), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.name, out)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "expects one SERVICE"},
		{[]string{"run", "deployment/transaction-service", "--dry-run=maybe"}, `invalid --dry-run "maybe"`},
		{[]string{"run", "deployment/transaction-service", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"history", "deployment/transaction-service", "-o", "xml"}, `invalid -o/--output "xml"`},
		{[]string{"history", "cronjob/x"}, `unsupported kind "cronjob"`},
		{[]string{"history", "payments"}, "no rollback.yaml found"},
		{[]string{"mark", "deployment/transaction-service", "two", "good"}, "REVISION must be a positive number"},
		{[]string{"mark", "deployment/transaction-service", "2", "great"}, `unknown mark "great"`},
		{[]string{"run", "deployment/transaction-service", "--no-such-flag"}, "unknown flag"},
		{[]string{"run", "deployment/transaction-service", "--pagerduty-incident", "https://acme.pagerduty.com/incidents/Q1"}, "expected a PagerDuty incident ID"},
		{[]string{"run", "deployment/transaction-service", "--force"}, "need --severity"},
		{[]string{"watch", "deployment/transaction-service", "--prometheus", "http://127.0.0.1:9", "--min-span", "-5s"}, "--min-span -5s: expected a duration of 0 or more"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Chdir(t.TempDir()) // no ./rollback.yaml
			code, _, errOut := runFake(t, fixture(), tt.args...)
			if code != ExitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d and %q, want exit %d and %q", code, errOut, ExitUsage, tt.want)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("boom"), ExitError},
		{usagef("bad"), ExitUsage},
		{config.Errors{{File: "f", Msg: "m"}}, ExitUsage},
		{fmt.Errorf("x: %w", kube.ErrPaused), ExitRefused},
		{fmt.Errorf("x: %w", kube.ErrRevisionNotFound), ExitRefused},
		{fmt.Errorf("x: %w", kube.ErrNoTarget), ExitRefused},
		{fmt.Errorf("x: %w", kube.ErrTargetBad), ExitRefused},
		{fmt.Errorf("x: %w", kube.ErrNotFound), ExitRefused},
		{fmt.Errorf("x: %w", kube.ErrTimeout), ExitTimeout},
		{fmt.Errorf("x: %w", kube.ErrProgressDeadline), ExitFailed},
		{fmt.Errorf("x: %w", kube.ErrImageMismatch), ExitFailed},
		{kube.ErrAborted, ExitAborted},
		{fmt.Errorf("x: %w", context.Canceled), ExitInterrupted},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestConfirmDeclinedChangesNothing(t *testing.T) {
	var out, errOut bytes.Buffer
	state := t.TempDir()
	io := &IOStreams{In: strings.NewReader("n\n"), Out: &out, ErrOut: &errOut, InTTY: true, ErrTTY: true, Getenv: func(k string) string {
		if k == "XDG_STATE_HOME" {
			return state
		}
		return ""
	}}
	f := &Factory{IO: io, Now: func() time.Time { return now }}
	client := fake.NewClientset(fixture()...)
	f.NewClient = func(*rest.Config) (kubernetes.Interface, error) { return client, nil }
	root := NewRootCmd(f, "rollback")
	root.SetArgs([]string{"run", "deployment/transaction-service", "--kubeconfig", kubeconfigFile(t)})
	err := root.ExecuteContext(context.Background())
	if ExitCode(err) != ExitAborted {
		t.Fatalf("got %v (exit %d), want aborted", err, ExitCode(err))
	}
	if !strings.Contains(errOut.String(), "Roll back deployment/transaction-service to revision 1? [y/N]") {
		t.Errorf("prompt missing: %s", errOut.String())
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			t.Errorf("declined run still sent %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestPluginName(t *testing.T) {
	f := &Factory{IO: &IOStreams{Getenv: func(string) string { return "" }}}
	if got := NewRootCmd(f, "kubectl-rollback").Use; got != "kubectl rollback" {
		t.Errorf("Use = %q, want kubectl rollback", got)
	}
}

func TestParseWorkloadArg(t *testing.T) {
	tests := []struct {
		arg   string
		name  string
		isRef bool
		bad   bool
	}{
		{"deployment/api", "api", true, false},
		{"deploy/api.v2", "api.v2", true, false},
		{"deployments.apps/api", "api", true, false},
		{"payments", "payments", false, false},
		{"deployment/", "", false, true},
		{"pod/api", "", false, true},
		{"statefulset/ledger", "ledger", true, false},
		{"sts/ledger", "ledger", true, false},
		{"DaemonSets.apps/logs", "logs", true, false},
		{"Payments", "", false, true},
		{"", "", false, true},
		{"deployment/a/b", "", false, true},
	}
	for _, tt := range tests {
		_, name, isRef, err := parseWorkloadArg(tt.arg)
		if (err != nil) != tt.bad || name != tt.name || isRef != tt.isRef {
			t.Errorf("parseWorkloadArg(%q) = %q, %v, %v; want %q, %v, error %v", tt.arg, name, isRef, err, tt.name, tt.isRef, tt.bad)
		}
	}
}

// FuzzParseWorkloadArg: an accepted argument yields a non-empty name with
// no slash; a rejected one is a usage error.
func FuzzParseWorkloadArg(f *testing.F) {
	for _, s := range []string{"deployment/api", "payments", "deploy/", "x/y/z", "DEPLOYMENT/a", "sts/db-0", "ds/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		_, name, _, err := parseWorkloadArg(arg)
		if err != nil {
			if ExitCode(err) != ExitUsage {
				t.Fatalf("rejection of %q is not a usage error: %v", arg, err)
			}
			return
		}
		if name == "" || strings.Contains(name, "/") {
			t.Fatalf("parseWorkloadArg(%q) accepted name %q", arg, name)
		}
	})
}

// serve refuses what would run two replicas on one machine's store: leader
// election on SQLite, and a second serve on the same SQLite file.
func TestServeRefusesSQLiteReplicas(t *testing.T) {
	t.Chdir(t.TempDir())
	st := filepath.Join(t.TempDir(), "serve.db")
	code, _, errOut := runFake(t, fixture(), "serve", "--leader-elect", "--store", st, "--listen", "127.0.0.1:0")
	if code != ExitUsage || !strings.Contains(errOut, "--leader-elect needs a store the replicas share") {
		t.Errorf("leader election on SQLite: exit %d %q", code, errOut)
	}
	s, err := store.Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AcquireLease(context.Background(), "serve", "other-host:1/serve", time.Minute); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runFake(t, fixture(), "serve", "--store", st, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "another 'rollback serve' uses this SQLite store") {
		t.Errorf("a second serve on one SQLite file: exit %d %q", code, errOut)
	}
}

// A load balancer's listener named as KIND/NAME, with no rollback.yaml to
// configure it, is a usage error that says what to pass (never a crash).
func TestListenerWithoutConfigIsAUsageError(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, errOut := runFake(t, nil, "history", "alb-listener/checkout", "-n", "shop")
	if code != ExitUsage || !strings.Contains(errOut, "pass the service's name") || strings.Contains(errOut, "panic") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}
