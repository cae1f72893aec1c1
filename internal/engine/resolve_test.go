package engine

import (
	"errors"
	"testing"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
)

// Locate: flags win over rollback.yaml, which wins over the kubeconfig;
// KIND/NAME of a configured object is that service; a name that is not
// configured is refused, saying what is.
func TestLocate(t *testing.T) {
	cfg, err := config.Parse("rollback.yaml", []byte(`
apiVersion: rollback/v1
services:
  payments:
    kubernetes: {kind: StatefulSet, name: ledger, namespace: money, context: prod}
  checkout:
    kubernetes: {kind: Service, name: web, namespace: shop, colorLabel: colour}
`))
	if err != nil {
		t.Fatal(err)
	}
	asked := ""
	kubeconfig := Where{DefaultNamespace: func(ctx string) (string, error) { asked = ctx; return "from-kubeconfig", nil }}
	for _, tc := range []struct {
		arg   string
		where Where
		want  kube.Target
		svc   string
		ctx   string
	}{
		{"payments", kubeconfig, kube.Target{Namespace: "money", Name: "ledger", Kind: kube.KindStatefulSet}, "payments", "prod"},
		{"payments", Where{Namespace: "other", Context: "staging"}, kube.Target{Namespace: "other", Name: "ledger", Kind: kube.KindStatefulSet}, "payments", "staging"},
		{"checkout", kubeconfig, kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindService, ColorLabel: "colour"}, "checkout", ""},
		{"sts/ledger", Where{Namespace: "money"}, kube.Target{Namespace: "money", Name: "ledger", Kind: kube.KindStatefulSet}, "payments", ""},
		{"sts/ledger", kubeconfig, kube.Target{Namespace: "from-kubeconfig", Name: "ledger", Kind: kube.KindStatefulSet}, "", ""},
		{"deployment/api", Where{Namespace: "x"}, kube.Target{Namespace: "x", Name: "api", Kind: kube.KindDeployment}, "", ""},
	} {
		w, err := Locate(cfg, tc.arg, tc.where)
		if err != nil {
			t.Errorf("%s: %v", tc.arg, err)
			continue
		}
		if w.Target != tc.want || w.Service != tc.svc || w.Context != tc.ctx {
			t.Errorf("%s %+v: %+v service %q context %q; want %+v %q %q", tc.arg, tc.where, w.Target, w.Service, w.Context, tc.want, tc.svc, tc.ctx)
		}
	}
	if asked != "" {
		t.Errorf("the kubeconfig was asked for context %q's namespace", asked)
	}
	for _, arg := range []string{"billing", "pod/x", "", "Payments", "deployment/a/b"} {
		if _, err := Locate(cfg, arg, kubeconfig); !errors.Is(err, ErrBadRef) {
			t.Errorf("%q: %v, want ErrBadRef", arg, err)
		}
	}
	if _, err := Locate(nil, "payments", kubeconfig); !errors.Is(err, ErrBadRef) {
		t.Errorf("no rollback.yaml: %v", err)
	}
}
