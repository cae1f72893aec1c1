// Package image reads container image references as the registry grammar
// defines them (github.com/distribution/reference): a registry host may
// carry a port (registry:5000/app), a reference may carry a tag, a digest
// or both (app:v1.2.0@sha256:…). A release's version is the tag, else the
// digest, never "whatever follows the last colon".
package image

import (
	"fmt"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Ref is one parsed image reference.
type Ref struct {
	// Name is the repository as written (registry:5000/team/app, or
	// nginx for Docker Hub's library/nginx).
	Name string
	// Canonical is the fully qualified repository
	// (docker.io/library/nginx).
	Canonical string
	Tag       string // "" when the reference has none
	Digest    string // sha256:…, "" when the reference has none
}

// Parse reads s. It fails for a string that is not an image reference.
func Parse(s string) (Ref, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("image %q: %w", s, err)
	}
	r := Ref{Name: reference.FamiliarName(named), Canonical: named.Name()}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	return r, nil
}

// Version is the release the reference names: its tag, else its digest,
// else "latest" (what a reference without either pulls).
func (r Ref) Version() string {
	switch {
	case r.Tag != "":
		return r.Tag
	case r.Digest != "":
		return r.Digest
	}
	return "latest"
}

// VersionOf is Parse(s).Version(), or s itself when s does not parse (a
// version is still needed to name what was abandoned).
func VersionOf(s string) string {
	r, err := Parse(s)
	if err != nil {
		return s
	}
	return r.Version()
}

// WithVersion is the reference to version v of r's repository, as written
// (name:tag, or name@digest when v is a digest).
func (r Ref) WithVersion(v string) string {
	if _, err := digest.Parse(v); err == nil {
		return r.Name + "@" + v
	}
	return r.Name + ":" + v
}
