package migrate

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestSafeDSNDropsEverySecret(t *testing.T) {
	const secret = "s3cr3t-Canary"
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://app:" + secret + "@db:5432/pay?sslmode=disable", "postgres://app@db:5432/pay?sslmode=disable"},
		{"postgres://app@db/pay?password=" + secret + "&sslmode=disable", "postgres://app@db/pay?sslmode=disable"},
		{"postgres://app@db/pay?sslpassword=" + secret, "postgres://app@db/pay"},
		{"host=db user=app password=" + secret + " dbname=pay", "host=db user=app dbname=pay"},
		{"host=db password='" + secret + " with space' dbname=pay", "host=db dbname=pay"},
		{`host=db password=a\ ` + secret + ` dbname='my db'`, "host=db dbname='my db'"},
		{"host=db password=" + secret + "#x dbname=pay", "host=db dbname=pay"},
		{"postgres://app:" + secret + "%zz@db/pay", Unparseable},
		{"postgres://app:" + secret + "#frag@db/pay", Unparseable},
		{"password=" + secret + " host='unterminated", Unparseable},
	} {
		got := SafeDSN(tc.dsn)
		if got != tc.want {
			t.Errorf("SafeDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		if strings.Contains(got, secret) {
			t.Errorf("SafeDSN(%q) leaks the secret: %q", tc.dsn, got)
		}
	}
}

func TestDatabaseNameFollowsPgx(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://u@h/app":                             "app",
		"postgres://u@h/app?sslmode=disable&dbname=real": "real",
		"host=h dbname='odd name'":                       "odd name",
		"postgres://u@h/%zz":                             "",
	} {
		if got := DatabaseName(dsn); got != want {
			t.Errorf("DatabaseName(%q) = %q, want %q", dsn, got, want)
		}
	}
}

func TestChildConnKeepsPasswordOffTheCommandLine(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:pw-Canary@db:5432/app?sslmode=disable&dbname=app",
		"host=db user=app password='pw-Canary' dbname=app",
	} {
		arg, env, err := childConn(dsn, "app_drill_1")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(arg, "pw-Canary") {
			t.Errorf("command line %q carries the password", arg)
		}
		if env[len(env)-1] != "PGPASSWORD=pw-Canary" {
			t.Errorf("environment ends %q, want PGPASSWORD", env[len(env)-1])
		}
		if got := DatabaseName(arg); got != "app_drill_1" {
			t.Errorf("child connection %q is on %q, want the clone", arg, got)
		}
	}
}

// A DSN whose query names the database (pgx honours it over the path)
// must still drill on the clone: the source keeps its table and history.
func TestDrillWithDbnameInQueryTouchesOnlyTheClone(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	src, _ := LoadDir(writeFiles(t, seedFiles()))
	flywayApply(t, conn, src, "1.2.0")
	name := DatabaseName(dsn)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	odd := dsn + sep + "dbname=" + name
	before, _ := TakeFingerprint(ctx, conn)
	res, err := Drill(ctx, odd, src, Flyway, "", DrillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || res.Database != name {
		t.Fatalf("drill %+v", res)
	}
	after, _ := TakeFingerprint(ctx, conn)
	if d := after.Diff(before); len(d) > 0 || historyVersions(t, conn) != "1.1.0,1.2.0" {
		t.Errorf("the drill changed the source: %v, history %s", d, historyVersions(t, conn))
	}
}

func TestOnDatabaseRefusesAnotherDatabase(t *testing.T) {
	conn, dsn := newDB(t)
	_ = dsn
	err := onDatabase(context.Background(), conn, "some_clone")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v, want ErrNotClone", err)
	}
	var c *pgx.Conn = conn
	if err := onDatabase(context.Background(), c, DatabaseName(dsn)); err != nil {
		t.Fatal(err)
	}
}

// Whatever the connection string, what SafeDSN shows never holds the
// password pgx would send.
func FuzzSafeDSN(f *testing.F) {
	for _, s := range []string{"postgres://u:pw@h/db?sslmode=disable", "host=h password='p w' dbname=d", "postgres://u@h/db?password=x&dbname=y", `password=a\ b host=h`, "postgres://u:p%zz@h/db"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		safe := SafeDSN(dsn)
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			if safe != Unparseable {
				t.Fatalf("SafeDSN(%q) = %q for a string pgx rejects", dsn, safe)
			}
			return
		}
		if len(cfg.Password) >= 4 && strings.Contains(safe, cfg.Password) {
			t.Fatalf("SafeDSN(%q) = %q shows the password %q", dsn, safe, cfg.Password)
		}
	})
}
