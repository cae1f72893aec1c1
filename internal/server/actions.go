package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/store"
)

// The dashboard's actions: approving or declining a proposed rollback from
// its incident page. A form posts with the session cookie, so each form
// carries a CSRF token bound to that session (and the browser's Origin,
// when it sends one, must be this server); only the operate role may act,
// with the same scope and SubjectAccessReview as the API.

// csrfToken is the form token of a session: an HMAC of the session value
// under the sessions' key.
func (s *Sessions) csrfToken(session string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("csrf\x00" + session))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// formCSRF is the CSRF token for the page's forms ("" without a session:
// a bearer-token caller has no cookie to be forged with).
func (s *Server) formCSRF(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	return s.o.Auth.sessions().csrfToken(c.Value)
}

// checkForm refuses a form post that another site could have made: a
// foreign Origin, or a CSRF token that is not this session's.
func (s *Server) checkForm(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	want := s.o.Auth.sessions().csrfToken(c.Value)
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(want))
}

// pageAction runs a dashboard form: the operate role, a valid form, then
// act; its error is shown on the incident page with its status.
func (s *Server) pageAction(act func(w http.ResponseWriter, r *http.Request, p Principal, inc *store.Incident) error) http.HandlerFunc {
	return s.authedPage(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		p := caller(r)
		if !p.Role.May(RoleOperate) {
			s.incidentPageWith(w, r, http.StatusForbidden, p.Name+" may "+p.Role.String()+"; approving and declining need the operate role")
			return
		}
		if !s.checkForm(r) {
			s.incidentPageWith(w, r, http.StatusForbidden, "the form is not this session's (expired, or posted from another site): reload the page and try again")
			return
		}
		inc, err := s.o.Store.GetIncident(r.Context(), r.PathValue("id"))
		if err == nil {
			err = act(w, r, p, inc)
		}
		if err != nil {
			s.incidentPageWith(w, r, statusOf(err), err.Error())
		}
	})
}

// pageApprove approves a proposal and follows its run's incident.
func (s *Server) pageApprove(w http.ResponseWriter, r *http.Request, p Principal, prop *store.Incident) error {
	if prop.Status != store.StatusProposed {
		return &httpError{code: http.StatusConflict, msg: notProposed(prop)}
	}
	wl, err := s.workloadFor(r.Context(), p, prop.Service, false)
	if err != nil {
		return err
	}
	by := "dashboard:" + p.Name
	s.o.Log.Info("proposal approved", "incident", prop.ID, "by", by)
	done := make(chan error, 1)
	opened, err := s.launch(wl.Key(), wl, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
		return e.Approve(ctx, prop.ID, by, wl, started)
	}, func(_ *engine.Outcome, err error) { done <- err })
	if err != nil {
		return err
	}
	select {
	case id := <-opened:
		http.Redirect(w, r, "/incidents/"+id, http.StatusSeeOther)
		return nil
	case err := <-done:
		select {
		case id := <-opened:
			http.Redirect(w, r, "/incidents/"+id, http.StatusSeeOther)
			return nil
		default:
		}
		if err != nil {
			return err
		}
	case <-time.After(startWait):
	}
	http.Redirect(w, r, "/incidents/"+prop.ID, http.StatusSeeOther)
	return nil
}

// pageDecline declines a proposal with the form's reason.
func (s *Server) pageDecline(w http.ResponseWriter, r *http.Request, p Principal, prop *store.Incident) error {
	if err := s.authorizeService(r.Context(), p, prop.Service); err != nil {
		return err
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		return &httpError{code: http.StatusBadRequest, msg: "say why the proposal is declined"}
	}
	if err := s.engineFor(nil).Decline(r.Context(), prop.ID, "dashboard:"+p.Name, clip(reason, 500)); err != nil {
		return err
	}
	http.Redirect(w, r, "/incidents/"+prop.ID, http.StatusSeeOther)
	return nil
}
