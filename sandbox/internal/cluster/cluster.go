// Package cluster starts and stops the sandbox: etcd, the Kubernetes
// control plane and kwok on loopback ports, with its files in one directory.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// State is what `up` records in DIR/sandbox.json and `down` reads back.
type State struct {
	Server    string    `json:"server"`
	StartedAt time.Time `json:"startedAt"`
	Procs     []proc    `json:"procs"`
}

const stateFile = "sandbox.json"

// Kubeconfig is the path of the kubeconfig `up` writes in dir.
func Kubeconfig(dir string) string { return filepath.Join(dir, "kubeconfig") }

// ErrRunning is returned by Up when a sandbox already runs in the directory.
var ErrRunning = errors.New("a sandbox is already running")

// ReadState loads the state of the sandbox in dir; os.ErrNotExist when none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// Running reports whether every process of the state is alive.
func (s *State) Running() bool {
	if len(s.Procs) == 0 {
		return false
	}
	for _, p := range s.Procs {
		if !p.alive() {
			return false
		}
	}
	return true
}

// Up starts a sandbox in dir and waits until a pod can become Ready.
// Progress lines go to log.
func Up(ctx context.Context, dir string, log io.Writer) (*State, error) {
	if s, err := ReadState(dir); err == nil {
		if s.Running() {
			return s, fmt.Errorf("%w in %s (API server %s, started %s); stop it with 'rollback-sandbox down --dir %s'",
				ErrRunning, dir, s.Server, s.StartedAt.Format(time.RFC3339), dir)
		}
		// A dead or half-dead sandbox: clean it up before starting anew.
		if err := Down(dir, io.Discard); err != nil {
			return nil, err
		}
	}
	etcdExe, err := findExe("etcd", "/usr/bin/etcd")
	if err != nil {
		return nil, fmt.Errorf("%w; install Debian's etcd-server package (apt-get install etcd-server)", err)
	}
	kwokExe, err := findExe("kwok")
	if err != nil {
		return nil, fmt.Errorf("%w; build it with 'make build'", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(dir, "logs")
	for _, d := range []string{dir, logDir, filepath.Join(dir, "etcd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	pk, err := writePKI(dir)
	if err != nil {
		return nil, fmt.Errorf("create certificates: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	st := &State{Server: "https://127.0.0.1:" + strconv.Itoa(apiPort), StartedAt: time.Now().UTC()}
	// Any failure from here on stops what was started.
	ok := false
	defer func() {
		if !ok {
			_ = writeState(dir, st)
			_ = Down(dir, io.Discard)
		}
	}()
	launch := func(name, exe string, args ...string) error {
		p, err := start(name, logDir, exe, args...)
		if err != nil {
			return err
		}
		st.Procs = append(st.Procs, p)
		return writeState(dir, st)
	}
	step := func(format string, a ...any) {
		fmt.Fprintf(log, "%s  %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, a...))
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	step("starting etcd on %s", etcdURL)
	if err := launch("etcd", etcdExe,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 30*time.Second, "etcd", func() error { return httpOK(etcdURL + "/health") }); err != nil {
		return nil, withLog(err, logDir, "etcd")
	}

	step("starting kube-apiserver on %s", st.Server)
	if err := launch("kube-apiserver", self, "component", "kube-apiserver",
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", pk.ServerCert, "--tls-private-key-file", pk.ServerKey,
		"--token-auth-file", pk.TokenFile,
		"--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", pk.SAPub,
		"--service-account-signing-key-file", pk.SAKey,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--enable-priority-and-fairness=false", "--watch-cache=false",
		"--endpoint-reconciler-type", "none",
		"--v", "0"); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(dir, st.Server, pk); err != nil {
		return nil, err
	}
	cs, err := client(dir)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 90*time.Second, "kube-apiserver", func() error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, withLog(err, logDir, "kube-apiserver")
	}

	kc := Kubeconfig(dir)
	step("starting kube-controller-manager and kube-scheduler")
	if err := launch("kube-controller-manager", self, "component", "kube-controller-manager",
		"--kubeconfig", kc, "--leader-elect=false", "--secure-port=0",
		"--controllers", "deployment-controller,replicaset-controller,garbage-collector-controller,"+
			"serviceaccount-controller,serviceaccount-token-controller,namespace-controller,"+
			"node-lifecycle-controller,root-ca-certificate-publisher-controller,"+
			"statefulset-controller,daemonset-controller,endpointslice-controller",
		"--service-account-private-key-file", pk.SAKey,
		"--root-ca-file", pk.CACert,
		"--use-service-account-credentials=false",
		// Rates for a namespace of hundreds of Deployments (the wide
		// rollback's bench): client-go's default 20 QPS would make the
		// sandbox's controllers, not the rollback, the bottleneck.
		"--concurrent-deployment-syncs=50", "--concurrent-replicaset-syncs=50",
		"--kube-api-qps=400", "--kube-api-burst=800",
		"--v", "0"); err != nil {
		return nil, err
	}
	if err := launch("kube-scheduler", self, "component", "kube-scheduler",
		"--kubeconfig", kc, "--leader-elect=false", "--secure-port=0", "--kube-api-qps=400", "--kube-api-burst=800", "--v", "0"); err != nil {
		return nil, err
	}
	step("starting kwok (simulated node)")
	stagesFile := filepath.Join(dir, "kwok-stages.yaml")
	if err := os.WriteFile(stagesFile, podStages, 0o644); err != nil {
		return nil, err
	}
	if err := launch("kwok", kwokExe,
		"--kubeconfig", kc, "--config", stagesFile,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
		"--node-lease-duration-seconds", "40",
		"--cidr", "10.244.0.1/24", "--node-ip", "10.244.0.1"); err != nil {
		return nil, err
	}
	if err := createNode(ctx, cs); err != nil {
		return nil, err
	}
	step("waiting until a pod can become Ready")
	if err := probePod(ctx, cs); err != nil {
		return nil, withLog(err, logDir, "kwok")
	}
	ok = true
	step("sandbox ready in %s", time.Since(st.StartedAt).Round(100*time.Millisecond))
	return st, nil
}

// Down stops every process of the sandbox in dir and removes its files.
func Down(dir string, log io.Writer) error {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(log, "no sandbox in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for i := len(st.Procs) - 1; i >= 0; i-- {
		p := st.Procs[i]
		if err := p.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(log, "stopped %s (pid %d)\n", p.Name, p.PID)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, name := range []string{stateFile, "kubeconfig", "ca.crt", "apiserver.crt", "apiserver.key",
		"sa.key", "sa.pub", "tokens.csv", "kwok-stages.yaml", "etcd", "logs"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	// Remove dir itself only when nothing else is left in it.
	_ = os.Remove(dir)
	return errors.Join(errs...)
}

func writeState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func writeKubeconfig(dir, server string, pk *pki) error {
	ca, err := os.ReadFile(pk.CACert)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["rollback-sandbox"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: pk.Token}
	cfg.Contexts["rollback-sandbox"] = &clientcmdapi.Context{Cluster: "rollback-sandbox", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "rollback-sandbox"
	return clientcmd.WriteToFile(*cfg, Kubeconfig(dir))
}

func client(dir string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(dir))
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = 100, 200
	return kubernetes.NewForConfig(rc)
}

func httpOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitFor retries check every 100ms until it succeeds or limit passes.
func waitFor(ctx context.Context, limit time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v", what, limit, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withLog appends the tail of a component's log to err.
func withLog(err error, logDir, name string) error {
	b, _ := os.ReadFile(filepath.Join(logDir, name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, filepath.Join(logDir, name+".log"), b)
}

const nodeName = "kwok-node-0"

func createNode(ctx context.Context, cs kubernetes.Interface) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        nodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{"kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux",
				"kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent", "type": "kwok"},
		},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{"cpu": mustQty("64"), "memory": mustQty("256Gi"), "pods": mustQty("500")},
			Capacity:    corev1.ResourceList{"cpu": mustQty("64"), "memory": mustQty("256Gi"), "pods": mustQty("500")},
		},
	}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
