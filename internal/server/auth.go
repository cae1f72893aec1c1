package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Role is what a caller may do.
type Role int

// Roles, each including the ones before it.
const (
	RoleNone Role = iota
	// RoleRead sees incidents, checklists, blocks and the schedule.
	RoleRead
	// RoleOperate also runs, resumes and approves rollbacks and blocks
	// versions.
	RoleOperate
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleOperate:
		return "operate"
	}
	return "none"
}

// Principal is an authenticated caller.
type Principal struct {
	Name string
	Role Role
}

// Reviewer checks a bearer token with the Kubernetes API server
// (TokenReview): the user and groups it names, ok false when the token is
// not valid.
type Reviewer func(ctx context.Context, token string) (user string, groups []string, ok bool, err error)

// Auth authenticates API and dashboard callers: static bearer tokens from
// the environment first, then, in a cluster, the API server's TokenReview
// with roles by user and group.
type Auth struct {
	tokens []staticToken
	Review Reviewer
	// OperateSubjects and ReadSubjects are users or groups
	// (group:NAME) given the role through TokenReview.
	OperateSubjects, ReadSubjects []string
	// AnonymousRead lets unauthenticated callers read (behind an
	// authenticating proxy).
	AnonymousRead bool
}

type staticToken struct {
	sum  [32]byte
	who  Principal
	name string
}

// ParseTokens reads ROLLBACK_API_TOKENS: entries NAME=ROLE:TOKEN separated
// by commas or newlines, ROLE read or operate. The tokens themselves never
// appear in an error.
func ParseTokens(spec string) ([]staticToken, error) {
	var out []staticToken
	for i, e := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == '\n' }) {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, rest, ok := strings.Cut(e, "=")
		role, tok, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || name == "" || len(tok) < 16 {
			return nil, fmt.Errorf("ROLLBACK_API_TOKENS entry %d: expected NAME=ROLE:TOKEN with a token of at least 16 characters", i+1)
		}
		r := RoleNone
		switch role {
		case "read":
			r = RoleRead
		case "operate", "operator":
			r = RoleOperate
		default:
			return nil, fmt.Errorf("ROLLBACK_API_TOKENS entry %d (%s): role %q; expected read or operate", i+1, name, role)
		}
		out = append(out, staticToken{sum: sha256.Sum256([]byte(tok)), who: Principal{Name: name, Role: r}, name: name})
	}
	return out, nil
}

// NewAuth is an Auth with the static tokens of spec.
func NewAuth(spec string) (*Auth, error) {
	t, err := ParseTokens(spec)
	if err != nil {
		return nil, err
	}
	return &Auth{tokens: t}, nil
}

// errUnauthenticated: no or an unknown credential.
var errUnauthenticated = errors.New("unauthenticated: send Authorization: Bearer TOKEN (a token of ROLLBACK_API_TOKENS or, in the cluster, a service account token)")

// tokenCookie carries a dashboard user's token in a browser.
const tokenCookie = "rollback_token"

// Authenticate returns the caller of r from its bearer token. Pages
// (cookie true) also take the dashboard's sign-in cookie; the API never
// does, so no other site can make a browser write through it.
func (a *Auth) Authenticate(r *http.Request, cookie bool) (Principal, error) {
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return Principal{}, errUnauthenticated
		}
		tok = strings.TrimSpace(t)
	} else if c, err := r.Cookie(tokenCookie); err == nil && cookie {
		tok = c.Value
	}
	if tok == "" {
		if a.AnonymousRead {
			return Principal{Name: "anonymous", Role: RoleRead}, nil
		}
		return Principal{}, errUnauthenticated
	}
	sum := sha256.Sum256([]byte(tok))
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			return t.who, nil
		}
	}
	if a.Review == nil {
		return Principal{}, errUnauthenticated
	}
	user, groups, ok, err := a.Review(r.Context(), tok)
	if err != nil {
		return Principal{}, fmt.Errorf("token review: %w", err)
	}
	if !ok {
		return Principal{}, errUnauthenticated
	}
	p := Principal{Name: user, Role: RoleNone}
	has := func(subjects []string) bool {
		if slices.Contains(subjects, user) {
			return true
		}
		for _, g := range groups {
			if slices.Contains(subjects, "group:"+g) {
				return true
			}
		}
		return false
	}
	switch {
	case has(a.OperateSubjects):
		p.Role = RoleOperate
	case has(a.ReadSubjects):
		p.Role = RoleRead
	}
	return p, nil
}
