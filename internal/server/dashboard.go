package server

import (
	"context"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"ts": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "–"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil {
				return "–"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return fmt.Sprint(t)
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(100 * time.Millisecond).String()
	},
	"inc":  func(i int) int { return i + 1 },
	"slug": func(s incident.Status) string { return strings.ReplaceAll(string(s), " ", "-") },
}).ParseFS(templateFS, "templates/*.html"))

// authedPage is authed for pages: a browser without a credential is sent
// to the sign-in form instead of a 401.
func (s *Server) authedPage(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.o.Auth.Authenticate(r, true)
		if err != nil || !p.Role.May(RoleRead) {
			if strings.HasSuffix(r.URL.Path, ".svg") {
				http.Error(w, "unauthenticated", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// dashboardPage is how many incidents the dashboard shows a page.
const dashboardPage = 50

type incidentRow struct {
	store.Incident
	TTR string
}

func (s *Server) render(w http.ResponseWriter, name string, data map[string]any) {
	s.renderCode(w, http.StatusOK, name, data)
}

func (s *Server) renderCode(w http.ResponseWriter, code int, name string, data map[string]any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.o.Log.Error("render", "page", name, "err", err)
	}
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// A constant number of queries whatever the history: a page of
	// incidents and their journals in one read.
	incs, err := s.o.Store.QueryIncidents(ctx, store.IncidentQuery{Limit: dashboardPage, Before: r.URL.Query().Get("before")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	ids := make([]string, len(incs))
	for i := range incs {
		ids[i] = incs[i].ID
	}
	journals, _ := s.o.Store.EventsOf(ctx, ids)
	rows := make([]incidentRow, 0, len(incs))
	for _, inc := range incs {
		row := incidentRow{Incident: inc}
		if ttr, ok := incident.TimeToRecover(&inc, journals[inc.ID]); ok {
			row.TTR = ttr.Round(100 * time.Millisecond).String()
		}
		rows = append(rows, row)
	}
	next := ""
	if len(incs) == dashboardPage {
		next = incs[len(incs)-1].ID
	}
	blocks, _ := s.o.Store.ListBlocks(ctx, "")
	items, _ := s.scheduleItems(ctx)
	s.render(w, "index.html", map[string]any{"Title": "Rollbacks", "Who": caller(r).Name, "Incidents": rows, "Next": next, "Blocks": blocks, "Schedule": items})
}

func (s *Server) incidentPage(w http.ResponseWriter, r *http.Request) {
	s.incidentPageWith(w, r, http.StatusOK, "")
}

// livePageEvery is how often the page of an open incident reloads itself
// (the Refresh header: live within the CSP, which allows no script).
const livePageEvery = 2

// incidentPageWith renders an incident's page with status code and, when
// an action failed, why. An open incident's page follows the run live.
func (s *Server) incidentPageWith(w http.ResponseWriter, r *http.Request, code int, problem string) {
	v, err := s.view(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	ttr := "–"
	if v.TimeToRecoverSeconds > 0 {
		ttr = (time.Duration(v.TimeToRecoverSeconds*10) * time.Second / 10).String()
	}
	p := caller(r)
	if v.Incident.Status == store.StatusOpen && problem == "" {
		w.Header().Set("Refresh", fmt.Sprint(livePageEvery))
	}
	s.renderCode(w, code, "incident.html", map[string]any{"Title": v.Incident.ID, "Who": p.Name, "View": v, "TTR": ttr,
		"CanAct": p.Role.May(RoleOperate), "CSRF": s.formCSRF(r), "Problem": problem,
		"Live": v.Incident.Status == store.StatusOpen, "Every": livePageEvery})
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, "login.html", map[string]any{"Title": "Sign in", "Who": "nobody"})
}

// login checks a token and starts a session: an HTTP-only, same-site
// cookie holding a signed, expiring session, never the token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	p, err := s.o.Auth.token(r.Context(), tok)
	if tok == "" || err != nil || !p.Role.May(RoleRead) {
		http.Error(w, "that token does not sign in", http.StatusUnauthorized)
		return
	}
	v, exp := s.o.Auth.sessions().Issue(p)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: v, Path: "/", Expires: exp, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	s.o.Log.Info("signed in", "who", p.Name, "role", p.Role.String())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the session: the cookie is cleared and the session revoked.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.o.Auth.sessions().Revoke(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
