package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Config is not part of a revision: rolling a pod template back leaves the
// new content of the ConfigMaps and Secrets it mounts in place. Rollback
// keeps, per revision, a copy of each ConfigMap and Secret the revision's
// template references, in the cluster beside the original (NAME-rbk-HASH,
// HASH the revision's pod hash; Secret content never leaves the cluster,
// only digests do), and restores the target revision's copies before the
// undo restarts the pods. Names with kustomize's hash suffix change with
// their content, so the old object is the old content: nothing needs
// restoring as long as it was not pruned.

// Labels and annotations on kept copies.
const (
	KeptOfLabel        = annotationPrefix + "kept-of"
	KeptRevisionLabel  = annotationPrefix + "kept-revision"
	ContentDigestAnnot = annotationPrefix + "content-sha256"
)

// ConfigRef is a ConfigMap or Secret a pod template references.
type ConfigRef struct {
	Kind string // ConfigMap, Secret
	Name string
}

// ConfigRefs are the ConfigMaps and Secrets a template references
// (volumes, projected volumes, envFrom, env valueFrom), sorted.
func ConfigRefs(t *corev1.PodTemplateSpec) []ConfigRef {
	seen := map[ConfigRef]bool{}
	add := func(kind, name string) {
		if name != "" {
			seen[ConfigRef{kind, name}] = true
		}
	}
	for _, v := range t.Spec.Volumes {
		if v.ConfigMap != nil {
			add("ConfigMap", v.ConfigMap.Name)
		}
		if v.Secret != nil {
			add("Secret", v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					add("ConfigMap", s.ConfigMap.Name)
				}
				if s.Secret != nil {
					add("Secret", s.Secret.Name)
				}
			}
		}
	}
	for _, c := range append(append([]corev1.Container(nil), t.Spec.InitContainers...), t.Spec.Containers...) {
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil {
				add("ConfigMap", e.ConfigMapRef.Name)
			}
			if e.SecretRef != nil {
				add("Secret", e.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				add("ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				add("Secret", e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	out := make([]ConfigRef, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+"/"+out[i].Name < out[j].Kind+"/"+out[j].Name })
	return out
}

// kustomizeSuffix is a kustomize configMapGenerator/secretGenerator name:
// NAME-HASH, HASH ten characters of kustomize's alphabet.
var kustomizeSuffix = regexp.MustCompile(`-[bcdfghkmt2-9]{10}$`)

// keptName is the kept copy of name for a revision.
func keptName(name, hash string) string {
	suffix := "-rbk-" + hash
	if len(name)+len(suffix) > 253 {
		name = name[:253-len(suffix)]
	}
	return name + suffix
}

// content is a ConfigMap's or Secret's data, and its digest.
type content struct {
	data   map[string][]byte
	text   map[string]string // a ConfigMap's data
	digest string
}

func digestOf(text map[string]string, data map[string][]byte) string {
	h := sha256.New()
	keys := make([]string, 0, len(text)+len(data))
	for k := range text {
		keys = append(keys, "t:"+k)
	}
	for k := range data {
		keys = append(keys, "b:"+k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		if strings.HasPrefix(k, "t:") {
			h.Write([]byte(text[k[2:]]))
		} else {
			h.Write(data[k[2:]])
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func getContent(ctx context.Context, cs kubernetes.Interface, ns string, r ConfigRef, name string) (*content, error) {
	if r.Kind == "ConfigMap" {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return &content{text: cm.Data, data: cm.BinaryData, digest: digestOf(cm.Data, cm.BinaryData)}, nil
	}
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return &content{data: s.Data, digest: digestOf(nil, s.Data)}, nil
}

// putContent creates name with c, or sets its data to c's, keeping its
// other metadata (a kept copy also gets labels).
func putContent(ctx context.Context, cs kubernetes.Interface, ns string, r ConfigRef, name string, c *content, labels map[string]string) error {
	opts := metav1.UpdateOptions{FieldManager: "rollback"}
	set := func(m *metav1.ObjectMeta) {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[ContentDigestAnnot] = c.digest
		if labels != nil {
			m.Labels = labels
		}
	}
	if r.Kind == "ConfigMap" {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: c.text, BinaryData: c.data}
			set(&cm.ObjectMeta)
			_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{FieldManager: "rollback"})
			return err
		}
		if err != nil {
			return err
		}
		cm.Data, cm.BinaryData = c.text, c.data
		set(&cm.ObjectMeta)
		_, err = cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, opts)
		return err
	}
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: c.data}
		set(&s.ObjectMeta)
		_, err = cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{FieldManager: "rollback"})
		return err
	}
	if err != nil {
		return err
	}
	s.Data, s.StringData = c.data, nil
	set(&s.ObjectMeta)
	_, err = cs.CoreV1().Secrets(ns).Update(ctx, s, opts)
	return err
}

func keptLabels(name, hash string) map[string]string {
	l := map[string]string{KeptRevisionLabel: hash}
	if len(name) <= 63 {
		l[KeptOfLabel] = name
	}
	return l
}

// KeepConfig keeps a copy of each ConfigMap and Secret revision r
// references, for a later rollback to it. It says what it kept.
func KeepConfig(ctx context.Context, cs kubernetes.Interface, ns string, r *Revision) ([]string, error) {
	if r.podHash == "" {
		return nil, fmt.Errorf("revision %d (%s) has no pod hash to key its config by", r.Number, r.Object)
	}
	var out []string
	for _, ref := range ConfigRefs(&r.template) {
		c, err := getContent(ctx, cs, ns, ref, ref.Name)
		if apierrors.IsNotFound(err) {
			out = append(out, fmt.Sprintf("%s %s: missing, nothing to keep", ref.Kind, ref.Name))
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read %s %s: %w", ref.Kind, ref.Name, err)
		}
		if err := putContent(ctx, cs, ns, ref, keptName(ref.Name, r.podHash), c, keptLabels(ref.Name, r.podHash)); err != nil {
			return out, fmt.Errorf("keep %s %s: %w", ref.Kind, ref.Name, err)
		}
		out = append(out, fmt.Sprintf("%s %s kept as %s (sha256 %s)", ref.Kind, ref.Name, keptName(ref.Name, r.podHash), c.digest[:12]))
	}
	return out, nil
}

// RestoreConfig puts the target revision's ConfigMaps and Secrets back
// from their kept copies, before the undo restarts the pods; the
// abandoned revision's are kept first, so it can be restored in turn. It
// says, per object, what it did or why nothing was needed.
func RestoreConfig(ctx context.Context, cs kubernetes.Interface, ns string, from, to *Revision) ([]string, error) {
	if from != nil && from.podHash != "" {
		if _, err := KeepConfig(ctx, cs, ns, from); err != nil {
			return nil, err
		}
	}
	var out []string
	for _, ref := range ConfigRefs(&to.template) {
		cur, err := getContent(ctx, cs, ns, ref, ref.Name)
		if err != nil && !apierrors.IsNotFound(err) {
			return out, fmt.Errorf("read %s %s: %w", ref.Kind, ref.Name, err)
		}
		if kustomizeSuffix.MatchString(ref.Name) && cur != nil {
			out = append(out, fmt.Sprintf("%s %s: kustomize hash suffix, the revision's own content, still there: nothing to restore", ref.Kind, ref.Name))
			continue
		}
		kept, kerr := getContent(ctx, cs, ns, ref, keptName(ref.Name, to.podHash))
		switch {
		case apierrors.IsNotFound(kerr) && cur == nil:
			return out, fmt.Errorf("%s %s that revision %d references is gone and no copy was kept; recreate it before rolling back", ref.Kind, ref.Name, to.Number)
		case apierrors.IsNotFound(kerr):
			out = append(out, fmt.Sprintf("%s %s: no copy kept for revision %d ('rollback config record' at release time keeps one): left as it is (sha256 %s)", ref.Kind, ref.Name, to.Number, cur.digest[:12]))
			continue
		case kerr != nil:
			return out, fmt.Errorf("read the kept copy of %s %s: %w", ref.Kind, ref.Name, kerr)
		case cur != nil && cur.digest == kept.digest:
			out = append(out, fmt.Sprintf("%s %s unchanged since revision %d (sha256 %s)", ref.Kind, ref.Name, to.Number, cur.digest[:12]))
			continue
		}
		if err := putContent(ctx, cs, ns, ref, ref.Name, kept, nil); err != nil {
			return out, fmt.Errorf("restore %s %s: %w", ref.Kind, ref.Name, err)
		}
		was := "missing"
		if cur != nil {
			was = "sha256 " + cur.digest[:12]
		}
		out = append(out, fmt.Sprintf("%s %s restored to revision %d's content (%s -> sha256 %s)", ref.Kind, ref.Name, to.Number, was, kept.digest[:12]))
	}
	return out, nil
}

// KeepCurrentConfig keeps the current revision's ConfigMaps and Secrets
// (at release time, beside 'rollback db record').
func KeepCurrentConfig(ctx context.Context, cs kubernetes.Interface, t Target) (*Revision, []string, error) {
	h, err := GetHistory(ctx, cs, t)
	if err != nil {
		return nil, nil, err
	}
	if !h.configured() {
		return nil, nil, fmt.Errorf("%s: a %s's config is not kept per revision (blue/green colours have their own, Helm renders its own)", t.Ref(), t.Of())
	}
	cur := h.Current()
	if cur == nil {
		return nil, nil, fmt.Errorf("%w: %s has no current revision", ErrNoTarget, t.Ref())
	}
	lines, err := KeepConfig(ctx, cs, t.Namespace, cur)
	return cur, lines, err
}
