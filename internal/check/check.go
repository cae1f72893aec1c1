// Package check evaluates the runbook's prerequisites for a safe rollback
// against a Deployment spec: a pinned, versioned image; rollout history
// retained; a rolling update that never takes capacity away. The CLI adds
// the checks that need the cluster, the database and the store.
package check

import (
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollback-dev/rollback/internal/image"
)

// Status of one prerequisite.
type Status string

// Statuses.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip" // could not be checked here; says why
)

// Result is one prerequisite's verdict.
type Result struct {
	Prerequisite string `json:"prerequisite"`
	Status       Status `json:"status"`
	Detail       string `json:"detail"`
	HowToEnsure  string `json:"howToEnsure,omitempty"`
}

var versionTag = regexp.MustCompile(`^v?\d+(\.\d+){0,3}([-+][0-9A-Za-z.-]+)?$`)

// Image checks that every container image is pinned to a version tag or a
// digest: never :latest, never untagged, never a moving tag like "stable".
func Image(d *appsv1.Deployment) Result {
	r := Result{Prerequisite: "Previous image tag is retained (versioned, never :latest)", HowToEnsure: "tag images with versions (v1.2.0) or pin digests; never overwrite :latest"}
	var bad, good []string
	for _, c := range d.Spec.Template.Spec.Containers {
		img := c.Image
		ref, perr := image.Parse(img)
		switch {
		case perr != nil:
			bad = append(bad, img+" (not an image reference: "+perr.Error()+")")
		case ref.Digest != "":
			good = append(good, img)
		default:
			tag := ref.Tag
			switch {
			case tag == "":
				bad = append(bad, img+" (no tag: means :latest)")
			case tag == "latest":
				bad = append(bad, img+" (:latest)")
			case !versionTag.MatchString(tag):
				bad = append(bad, fmt.Sprintf("%s (tag %q is not a version)", img, tag))
			default:
				good = append(good, img)
			}
		}
	}
	if len(bad) > 0 {
		r.Status, r.Detail = Fail, strings.Join(bad, "; ")
	} else {
		r.Status, r.Detail = Pass, strings.Join(good, ", ")
	}
	return r
}

// History checks revisionHistoryLimit ≥ 3 (unset means Kubernetes' 10).
func History(d *appsv1.Deployment) Result {
	r := Result{Prerequisite: "Kubernetes rollout history retained (revisionHistoryLimit ≥ 3)", HowToEnsure: "set spec.revisionHistoryLimit to 3 or more (the runbook uses 5)"}
	limit := int32(10)
	if d.Spec.RevisionHistoryLimit != nil {
		limit = *d.Spec.RevisionHistoryLimit
	}
	r.Detail = fmt.Sprintf("revisionHistoryLimit %d", limit)
	r.Status = Pass
	if limit < 3 {
		r.Status = Fail
	}
	return r
}

// Strategy checks RollingUpdate with maxUnavailable 0.
func Strategy(d *appsv1.Deployment) Result {
	r := Result{Prerequisite: "RollingUpdate with maxUnavailable 0", HowToEnsure: "strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"}
	s := d.Spec.Strategy
	if s.Type != "" && s.Type != appsv1.RollingUpdateDeploymentStrategyType {
		r.Status, r.Detail = Fail, fmt.Sprintf("strategy %s takes every pod down at once", s.Type)
		return r
	}
	if s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil {
		r.Status, r.Detail = Fail, "maxUnavailable unset (Kubernetes' default is 25%): a rollout or rollback takes capacity away"
		return r
	}
	mu := s.RollingUpdate.MaxUnavailable.String()
	if mu != "0" && mu != "0%" {
		r.Status, r.Detail = Fail, "maxUnavailable "+mu
		return r
	}
	r.Status, r.Detail = Pass, "RollingUpdate, maxUnavailable 0"
	return r
}
