package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// sessionCookie carries a dashboard user's signed session (never the
// token the user signed in with).
const sessionCookie = "rollback_session"

// Sessions signs and opens the dashboard's sessions: who signed in, their
// role, scope and identity, and when the session expires, under an HMAC
// key. Replicas that share the key (ROLLBACK_SESSION_KEY) share sessions.
type Sessions struct {
	key []byte
	// TTL is how long a session lasts (default 8h).
	TTL time.Duration
	Now func() time.Time

	mu      sync.Mutex
	revoked map[string]time.Time // signed out before they expire
}

// NewSessions signs with key, or with a random key of this process when
// key is empty.
func NewSessions(key string) *Sessions {
	k := []byte(key)
	if len(k) == 0 {
		k = make([]byte, 32)
		_, _ = rand.Read(k)
	}
	return &Sessions{key: k}
}

func (a *Auth) sessions() *Sessions {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Sessions == nil {
		a.Sessions = NewSessions("")
	}
	return a.Sessions
}

type sessionClaims struct {
	Name     string    `json:"n"`
	Role     Role      `json:"r"`
	Services []string  `json:"s,omitempty"`
	Scoped   bool      `json:"c,omitempty"`
	Identity *Identity `json:"id,omitempty"`
	Expires  int64     `json:"e"`
	Nonce    string    `json:"o"`
}

func (s *Sessions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sessions) sign(payload string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Issue is a session value for p and when it expires.
func (s *Sessions) Issue(p Principal) (string, time.Time) {
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 8 * time.Hour
	}
	exp := s.now().Add(ttl)
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	b, _ := json.Marshal(sessionClaims{Name: p.Name, Role: p.Role, Services: p.Services, Scoped: p.Services != nil,
		Identity: p.Identity, Expires: exp.Unix(), Nonce: base64.RawURLEncoding.EncodeToString(nonce)})
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + s.sign(payload), exp
}

// Open returns the principal of a session value that is signed, not
// expired and not signed out.
func (s *Sessions) Open(v string) (Principal, bool) {
	payload, sig, ok := strings.Cut(v, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(payload))) {
		return Principal{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Principal{}, false
	}
	var c sessionClaims
	if json.Unmarshal(b, &c) != nil || s.now().Unix() >= c.Expires {
		return Principal{}, false
	}
	s.mu.Lock()
	_, gone := s.revoked[sig]
	s.mu.Unlock()
	if gone {
		return Principal{}, false
	}
	p := Principal{Name: c.Name, Role: c.Role, Identity: c.Identity}
	if c.Scoped {
		p.Services = append([]string{}, c.Services...)
	}
	return p, true
}

// Revoke ends a session before it expires (sign-out) in this process.
func (s *Sessions) Revoke(v string) {
	payload, sig, ok := strings.Cut(v, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(payload))) {
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked == nil {
		s.revoked = map[string]time.Time{}
	}
	for k, exp := range s.revoked {
		if now.After(exp) {
			delete(s.revoked, k)
		}
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 8 * time.Hour
	}
	s.revoked[sig] = now.Add(ttl)
}
