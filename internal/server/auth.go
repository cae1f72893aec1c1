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
	"sync"
	"time"
)

// Role is what a caller may do.
type Role int

// Roles. Read and operate each include the ones before them; trigger is
// beside them: it may only deliver alerts (Alertmanager's credential),
// which operate may too.
const (
	RoleNone Role = iota
	// RoleTrigger delivers Alertmanager notifications, nothing else.
	RoleTrigger
	// RoleRead sees incidents, checklists, blocks and the schedule.
	RoleRead
	// RoleOperate also runs, resumes and approves rollbacks and blocks
	// versions.
	RoleOperate
)

func (r Role) String() string {
	switch r {
	case RoleTrigger:
		return "trigger"
	case RoleRead:
		return "read"
	case RoleOperate:
		return "operate"
	}
	return "none"
}

// May reports whether a caller of role r may use a route that needs role
// need.
func (r Role) May(need Role) bool {
	switch need {
	case RoleNone:
		return true
	case RoleTrigger:
		return r == RoleTrigger || r == RoleOperate
	case RoleRead:
		return r == RoleRead || r == RoleOperate
	}
	return r == need
}

// Identity is a user the API server authenticated (TokenReview): the
// server asks the API server what this user may do (SubjectAccessReview)
// before acting for it.
type Identity struct {
	User   string              `json:"u"`
	UID    string              `json:"i,omitempty"`
	Groups []string            `json:"g,omitempty"`
	Extra  map[string][]string `json:"x,omitempty"`
}

// Principal is an authenticated caller.
type Principal struct {
	Name string
	Role Role
	// Services, when not nil, are the only services (configured names or
	// NAMESPACE/KIND/NAME) the caller may act on: a scoped static token.
	Services []string
	// Identity is set for callers the API server authenticated; their
	// rights on a workload are checked with a SubjectAccessReview.
	Identity *Identity
}

// scoped reports whether the caller may act on a service known by any of
// names (its configured name, its NAMESPACE/KIND/NAME).
func (p Principal) scoped(names ...string) bool {
	if p.Services == nil {
		return true
	}
	for _, n := range names {
		if n != "" && slices.Contains(p.Services, n) {
			return true
		}
	}
	return false
}

// Reviewer checks a bearer token with the Kubernetes API server
// (TokenReview): the user it names, ok false when the token is not valid.
type Reviewer func(ctx context.Context, token string) (id Identity, ok bool, err error)

// Auth authenticates API and dashboard callers: static bearer tokens from
// the environment first, then, in a cluster, the API server's TokenReview
// with roles by user and group.
type Auth struct {
	tokens []staticToken
	Review Reviewer
	// ReviewTTL is how long a TokenReview's answer (valid or not) is
	// reused for the same token (default 10s; the API server's own
	// webhook token cache keeps answers for about as long). Errors are
	// never cached.
	ReviewTTL time.Duration
	// OperateSubjects, ReadSubjects and TriggerSubjects are users or
	// groups (group:NAME) given the role through TokenReview.
	OperateSubjects, ReadSubjects, TriggerSubjects []string
	// AnonymousRead lets unauthenticated callers read (behind an
	// authenticating proxy).
	AnonymousRead bool
	// Sessions signs the dashboard's sign-in cookies (nil: a key of this
	// process's own, so sessions do not outlive it or cross replicas).
	Sessions *Sessions

	mu      sync.Mutex
	reviews map[[32]byte]cachedReview
}

type cachedReview struct {
	id      Identity
	ok      bool
	expires time.Time
}

// maxCachedReviews bounds the TokenReview cache: a flood of unknown
// tokens costs at most this much memory, then the cache starts over.
const maxCachedReviews = 10000

type staticToken struct {
	sum  [32]byte
	who  Principal
	name string
}

// ParseTokens reads ROLLBACK_API_TOKENS: entries NAME=ROLE:TOKEN
// separated by commas or newlines, ROLE read, operate or trigger, and
// optionally scoped to services as ROLE@SERVICE|SERVICE... (configured
// names or NAMESPACE/KIND/NAME). The tokens themselves never appear in an
// error.
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
			return nil, fmt.Errorf("ROLLBACK_API_TOKENS entry %d: expected NAME=ROLE:TOKEN (or NAME=ROLE@SERVICE|SERVICE:TOKEN) with a token of at least 16 characters", i+1)
		}
		role, scope, scoped := strings.Cut(role, "@")
		p := Principal{Name: name}
		switch role {
		case "read":
			p.Role = RoleRead
		case "operate", "operator":
			p.Role = RoleOperate
		case "trigger":
			p.Role = RoleTrigger
		default:
			return nil, fmt.Errorf("ROLLBACK_API_TOKENS entry %d (%s): role %q; expected read, operate or trigger", i+1, name, role)
		}
		if scoped {
			p.Services = []string{}
			for _, s := range strings.Split(scope, "|") {
				if s = strings.TrimSpace(s); s != "" {
					p.Services = append(p.Services, s)
				}
			}
			if len(p.Services) == 0 {
				return nil, fmt.Errorf("ROLLBACK_API_TOKENS entry %d (%s): @ names no service; expected ROLE@SERVICE|SERVICE", i+1, name)
			}
		}
		out = append(out, staticToken{sum: sha256.Sum256([]byte(tok)), who: p, name: name})
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

// Authenticate returns the caller of r from its bearer token. Pages
// (cookie true) also take the dashboard's session cookie; the API never
// does, so no other site can make a browser write through it.
func (a *Auth) Authenticate(r *http.Request, cookie bool) (Principal, error) {
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return Principal{}, errUnauthenticated
		}
		tok = strings.TrimSpace(t)
	} else if c, err := r.Cookie(sessionCookie); err == nil && cookie {
		if p, ok := a.sessions().Open(c.Value); ok {
			return p, nil
		}
	}
	if tok == "" {
		if a.AnonymousRead {
			return Principal{Name: "anonymous", Role: RoleRead}, nil
		}
		return Principal{}, errUnauthenticated
	}
	return a.token(r.Context(), tok)
}

// token authenticates a bearer token.
func (a *Auth) token(ctx context.Context, tok string) (Principal, error) {
	sum := sha256.Sum256([]byte(tok))
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			return t.who, nil
		}
	}
	if a.Review == nil {
		return Principal{}, errUnauthenticated
	}
	id, ok, err := a.review(ctx, sum, tok)
	if err != nil {
		return Principal{}, fmt.Errorf("token review: %w", err)
	}
	if !ok {
		return Principal{}, errUnauthenticated
	}
	p := Principal{Name: id.User, Role: RoleNone, Identity: &id}
	has := func(subjects []string) bool {
		if slices.Contains(subjects, id.User) {
			return true
		}
		for _, g := range id.Groups {
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
	case has(a.TriggerSubjects):
		p.Role = RoleTrigger
	}
	return p, nil
}

// review asks the API server about a token, reusing an answer of the last
// ReviewTTL: each unknown token costs one TokenReview, not one a request.
func (a *Auth) review(ctx context.Context, sum [32]byte, tok string) (Identity, bool, error) {
	ttl := a.ReviewTTL
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	now := time.Now()
	a.mu.Lock()
	if c, ok := a.reviews[sum]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.id, c.ok, nil
	}
	a.mu.Unlock()
	id, ok, err := a.Review(ctx, tok)
	if err != nil {
		return Identity{}, false, err
	}
	a.mu.Lock()
	if a.reviews == nil || len(a.reviews) >= maxCachedReviews {
		a.reviews = map[[32]byte]cachedReview{}
	}
	a.reviews[sum] = cachedReview{id: id, ok: ok, expires: now.Add(ttl)}
	a.mu.Unlock()
	return id, ok, nil
}
