package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// applyManifest applies a deploy/ manifest with its namespaces replaced.
func applyManifest(t *testing.T, name string, repl ...string) {
	t.Helper()
	root, _ := repoRoot()
	b, err := os.ReadFile(filepath.Join(root, "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	y := strings.NewReplacer(repl...).Replace(string(b))
	f := filepath.Join(t.TempDir(), name)
	_ = os.WriteFile(f, []byte(y), 0o600)
	kubectl(t, "apply", "-f", f)
}

// saKubeconfig is a kubeconfig that authenticates as a service account
// with a bound token from the TokenRequest API.
func saKubeconfig(t *testing.T, ns, sa string) (path, token string) {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := admin.Contexts[admin.CurrentContext]
	cl := admin.Clusters[cur.Cluster]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = cl
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts[sa] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: sa, Namespace: ns}
	cfg.CurrentContext = sa
	path = filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path, tr.Status.Token
}

// rollback serve runs as the deploy/ manifests' service account, with only
// their RBAC: it elects itself on the Lease, rolls a Deployment back
// through the whole runbook with Events, checks a caller's service
// account token with TokenReview (read-only role), and may do nothing the
// manifests do not grant.
func TestServeWithTheManifestsRBAC(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	sys := ns + "-sys"
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sys}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), sys, metav1.DeleteOptions{}) })
	deploy(t, ns, "v1.1.5", "v1.2.0")
	// The server's own objects (no Deployment: the server runs here as a
	// process), with cluster-scoped names made unique for the test.
	root, _ := repoRoot()
	b, _ := os.ReadFile(filepath.Join(root, "deploy", "serve.yaml"))
	docs := strings.Split(string(b), "\n---\n")
	var keep []string
	for _, d := range docs {
		if !strings.Contains(d, "kind: Deployment") && !strings.Contains(d, "kind: Service\n") {
			keep = append(keep, d)
		}
	}
	f := filepath.Join(t.TempDir(), "serve.yaml")
	_ = os.WriteFile(f, []byte(strings.NewReplacer("rollback-system", sys, "name: rollback-tokenreview", "name: rollback-tokenreview-"+ns).Replace(strings.Join(keep, "\n---\n"))), 0o600)
	kubectl(t, "apply", "-f", f)
	t.Cleanup(func() {
		kubectl(t, "delete", "clusterrole,clusterrolebinding", "rollback-tokenreview-"+ns, "--ignore-not-found")
	})
	applyManifest(t, "workloads-role.yaml", "NAMESPACE", ns, "rollback-system", sys)
	kubectl(t, "create", "serviceaccount", "viewer", "-n", ns)

	kc, _ := saKubeconfig(t, sys, "rollback")
	_, viewerToken := saKubeconfig(t, ns, "viewer")
	cfg := serviceConfig(t, "ts", ns, "")
	// Leader election needs a store the replicas share.
	st, err := pg.CreateDB(ctx, "rbac_"+strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, st, cfg, "--kubeconfig", kc, "--leader-elect", "--lease-namespace", sys,
		"--token-review", "true", "--reader", "group:system:serviceaccounts:"+ns)
	srv.waitLog(t, 30*time.Second, `"msg":"leading"`)
	code, body := srv.api(t, "POST", "/api/v1/runs", `{"service":"ts"}`)
	if code != 202 && code != 200 {
		t.Fatalf("run: %d %s", code, body)
	}
	inc := srv.waitClosed(t, "ts", 2*time.Minute)
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the run as the service account: %s", got)
	}
	_, body = srv.api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
	var v struct {
		Checklist []struct{ Item, Status, Evidence string } `json:"checklist"`
	}
	_ = json.Unmarshal(body, &v)
	for _, it := range v.Checklist {
		if it.Status == "failed" {
			t.Errorf("checklist item failed with the manifests' RBAC: %s: %s", it.Item, it.Evidence)
		}
	}
	for _, l := range srv.lines() {
		if strings.Contains(l, "forbidden") {
			t.Errorf("a request was forbidden: %s", l)
		}
	}
	evs, _ := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + app})
	posted := 0
	for _, e := range evs.Items {
		if e.Source.Component == "rollback" {
			posted++
		}
	}
	if posted == 0 {
		t.Error("no Events posted as the service account")
	}
	// TokenReview: a service account of the namespace may read, not write.
	get := func(method, path, token string) int {
		req, _ := http.NewRequest(method, srv.url+path, strings.NewReader(`{"service":"ts","version":"v9","reason":"x"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("GET", "/api/v1/incidents", viewerToken); c != 200 {
		t.Errorf("viewer reads: %d, want 200", c)
	}
	if c := get("POST", "/api/v1/blocks", viewerToken); c != 403 {
		t.Errorf("viewer writes: %d, want 403", c)
	}
	if c := get("GET", "/api/v1/incidents", "not-a-token-0123456789"); c != 401 {
		t.Errorf("a made-up token: %d, want 401", c)
	}
	// Least privilege: what the manifests do not grant is denied.
	user := "system:serviceaccount:" + sys + ":rollback"
	for _, ra := range []authzv1.ResourceAttributes{
		{Namespace: ns, Verb: "delete", Group: "apps", Resource: "deployments"},
		{Namespace: ns, Verb: "create", Group: "apps", Resource: "deployments"},
		{Namespace: ns, Verb: "list", Resource: "secrets"},
		{Namespace: "default", Verb: "patch", Group: "apps", Resource: "deployments"},
		{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases"},
	} {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil || sar.Status.Allowed {
			t.Errorf("%s %s/%s in %s: allowed=%v (%v), want denied", ra.Verb, ra.Group, ra.Resource, ra.Namespace, sar != nil && sar.Status.Allowed, err)
		}
	}
}

// The GitOps pause as the shipped service account, with the shipped
// per-feature Roles: without rollback-gitops bound where the Application
// lives, the run stops before the undo with an error naming the rule
// (never "not Argo CD" and an undo the reconciler reverts); with it bound,
// the resumed run pauses the Application and rolls back.
func TestGitOpsRoleAsTheServiceAccount(t *testing.T) {
	parallel(t)
	installGitOps(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	paused := argoApp(t, ns)
	sys, asSA := asServiceAccount(t, ns)
	err, out := asSA("run", "deployment/"+app, "-n", ns, "--yes")
	if err == nil || !strings.Contains(out, "grant get and patch on applications.argoproj.io in namespace argocd") {
		t.Fatalf("without the GitOps role: %v, want a failure naming the rule\n%s", err, out)
	}
	if got := runningImage(t, ns); got != image("v1.2.0") {
		t.Errorf("the undo ran without the pause: %s", got)
	}
	id := incidentID.FindString(out)
	// Bind rollback-gitops where the Application lives, as the manifest's
	// comment says, and resume.
	root, _ := repoRoot()
	b, _ := os.ReadFile(filepath.Join(root, "deploy", "workloads-role.yaml"))
	var gitopsDocs []string
	for _, d := range strings.Split(string(b), "\n---\n") {
		if strings.Contains(d, "name: rollback-gitops") {
			gitopsDocs = append(gitopsDocs, strings.NewReplacer("namespace: NAMESPACE", "namespace: argocd", "name: rollback-gitops", "name: rollback-gitops-"+ns,
				"namespace: rollback-system", "namespace: "+sys).Replace(d))
		}
	}
	if len(gitopsDocs) != 2 {
		t.Fatalf("rollback-gitops Role and RoleBinding not found in the manifest: %d documents", len(gitopsDocs))
	}
	kubectlApply(t, strings.Join(gitopsDocs, "\n---\n"))
	t.Cleanup(func() {
		kubectl(t, "delete", "role,rolebinding", "rollback-gitops-"+ns, "-n", "argocd", "--ignore-not-found")
	})
	if err, out := asSA("resume", id); err != nil {
		t.Fatalf("resume with the GitOps role: %v\n%s", err, out)
	}
	if !paused() || runningImage(t, ns) != image("v1.1.5") {
		t.Errorf("after the resume: paused %v, running %s", paused(), runningImage(t, ns))
	}
}

// The blue/green switch as the shipped service account: with only the
// plain-workloads Role the switch is refused (forbidden) and the Service
// stays where it was; with rollback-bluegreen bound it switches to blue.
func TestBlueGreenRoleAsTheServiceAccount(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	blueGreen(t, ns, 2)
	sys, asSA := asServiceAccount(t, ns)
	kubectl(t, "delete", "rolebinding", "rollback-bluegreen", "-n", ns)
	if err, out := asSA("run", "service/"+app, "-n", ns, "--yes"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("without rollback-bluegreen: %v, want a refusal\n%s", err, out)
	}
	if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "green" {
		t.Errorf("refused, yet the selector is %q", got)
	}
	applyManifest(t, "workloads-role.yaml", "NAMESPACE", ns, "rollback-system", sys)
	if err, out := asSA("run", "service/"+app, "-n", ns, "--yes"); err != nil {
		// A first run that stopped may have left its incident open.
		if id := incidentID.FindString(out); id != "" && strings.Contains(out, "rollback resume") {
			err, out = asSA("resume", id)
		}
		if err != nil {
			t.Fatalf("with rollback-bluegreen: %v\n%s", err, out)
		}
	}
	if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "blue" {
		t.Errorf("with the Role the selector is %q, want blue", got)
	}
}

// asServiceAccount makes NS-sys with the service account "rollback", binds
// the shipped per-namespace Roles for ns to it, and returns the system
// namespace and a runner of the rollback binary as that account only (its
// own --kubeconfig: the e2e rollbackEnv helper would add the admin's).
func asServiceAccount(t *testing.T, ns string) (sys string, run func(args ...string) (error, string)) {
	t.Helper()
	ctx := context.Background()
	sys = ns + "-sys"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sys}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), sys, metav1.DeleteOptions{}) })
	kubectl(t, "create", "serviceaccount", "rollback", "-n", sys)
	applyManifest(t, "workloads-role.yaml", "NAMESPACE", ns, "rollback-system", sys)
	kc, _ := saKubeconfig(t, sys, "rollback")
	st := filepath.Join(t.TempDir(), "r.db")
	return sys, func(args ...string) (error, string) {
		out, err := rollbackCmd(st, append(args, "--kubeconfig", kc)...).CombinedOutput()
		return err, string(out)
	}
}

// Each feature's Role, exercised as the shipped service account: with its
// binding removed (Helm's is not in workloads-role.yaml: it reads every
// Secret) the run stops with a refusal that names what is missing and the
// object is as it was (a 403 is never read as "nothing there"); with the
// manifest's binding applied, the resumed run rolls back.
func TestFeatureRolesAsTheServiceAccount(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		name, binding, target string
		manifest              string // what grants it: workloads-role.yaml's binding, or a file of its own
		setup                 func(t *testing.T, ns string)
		state                 func(t *testing.T, ns string) string
		check                 func(t *testing.T, ns string)
	}{
		{name: "argo", binding: "rollback-argo", target: "rollout/" + app,
			setup: func(t *testing.T, ns string) { startArgoRollouts(t); argoCanary(t, ns, 0) },
			state: func(t *testing.T, ns string) string {
				return rolloutField(t, ns, ".spec.template.spec.containers[0].image") + " " + rolloutField(t, ns, ".status.abort")
			},
			check: checkRolledBack},
		{name: "flagger", binding: "rollback-flagger", target: "canary/" + app,
			setup: func(t *testing.T, ns string) {
				startFlagger(t)
				flaggerCanary(t, ns, 1000)
				setImage(t, ns, "v1.2.0")
				waitCanary(t, ns, "Progressing")
			},
			state: func(t *testing.T, ns string) string {
				return runningImage(t, ns) + " " + canaryField(t, ns, ".status.failedChecks")
			},
			check: func(t *testing.T, ns string) { checkFlaggerRolledBack(t, ns, "Failed") }},
		{name: "helm", binding: "rollback-helm", target: "helm/app", manifest: "helm-role.yaml",
			setup: helmRelease,
			state: func(t *testing.T, ns string) string { return fmt.Sprint(len(helmHistory(t, ns))) },
			check: checkHelmRolledBack},
		{name: "config", binding: "rollback-config", target: "deployment/" + app,
			setup: func(t *testing.T, ns string) {
				putConfig(t, ns, "app-config", "strict", "app-creds", "pw-old")
				configDeployment(t, ns, "v1.1.5", "app-config", "app-creds")
				if r := rollback(t, "config", "record", "deployment/"+app, "-n", ns); r.code != 0 {
					t.Fatalf("config record: exit %d\n%s", r.code, r.stderr)
				}
				putConfig(t, ns, "app-config", "lenient", "app-creds", "pw-new")
				configDeployment(t, ns, "v1.2.0", "app-config", "app-creds")
			},
			state: func(t *testing.T, ns string) string {
				return runningImage(t, ns) + " " + kubectl(t, "get", "configmap", "app-config", "-n", ns, "-o", "jsonpath={.data.FRAUD_LEVEL}")
			},
			check: func(t *testing.T, ns string) {
				if got := kubectl(t, "get", "configmap", "app-config", "-n", ns, "-o", "jsonpath={.data.FRAUD_LEVEL}"); got != "strict" {
					t.Errorf("the ConfigMap was not restored: %q", got)
				}
				if got := runningImage(t, ns); got != image("v1.1.5") {
					t.Errorf("running %s", got)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			tc.setup(t, ns)
			sys, asSA := asServiceAccount(t, ns)
			ownFile := tc.manifest != ""
			if !ownFile {
				tc.manifest = "workloads-role.yaml"
				kubectl(t, "delete", "rolebinding", tc.binding, "-n", ns)
			}
			before := tc.state(t, ns)
			err, out := asSA("run", tc.target, "-n", ns, "--yes", "--timeout", "90s")
			if err == nil || !strings.Contains(out, "forbidden") && !strings.Contains(out, "grant ") {
				t.Fatalf("without %s: %v, want a refusal\n%s", tc.binding, err, out)
			}
			t.Logf("without %s: %s", tc.binding, out)
			if ownFile && !strings.Contains(out, "deploy/"+tc.manifest) {
				t.Errorf("the refusal does not name deploy/%s", tc.manifest)
			}
			if after := tc.state(t, ns); after != before {
				t.Errorf("refused, yet changed: %q, was %q", after, before)
			}
			applyManifest(t, tc.manifest, "NAMESPACE", ns, "rollback-system", sys)
			if id := incidentID.FindString(out); id != "" && strings.Contains(out, "rollback resume") {
				err, out = asSA("resume", id)
			} else {
				err, out = asSA("run", tc.target, "-n", ns, "--yes", "--timeout", "90s")
			}
			if err != nil {
				t.Fatalf("with %s bound: %v\n%s", tc.binding, err, out)
			}
			tc.check(t, ns)
		})
	}
}
