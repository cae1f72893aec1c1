package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what the package needs of a connection or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Default history tables.
const (
	FlywayTable        = "flyway_schema_history"
	GolangMigrateTable = "schema_migrations"
)

// Applied is one row of flyway_schema_history (golang-migrate has only a
// version and a dirty flag; its rows fill Version and Success).
type Applied struct {
	Rank        int       `json:"installedRank"`
	Version     Version   `json:"-"`
	VersionText string    `json:"version"`
	Description string    `json:"description"`
	Type        string    `json:"type"`
	Script      string    `json:"script"`
	Checksum    *int32    `json:"checksum,omitempty"`
	InstalledBy string    `json:"installedBy"`
	InstalledOn time.Time `json:"installedOn"`
	ExecTimeMS  int       `json:"executionTime"`
	Success     bool      `json:"success"`
}

// State is what the history table says about the database.
type State struct {
	Format Format `json:"format"`
	Table  string `json:"table"`
	// Applied are the versioned migrations in effect, oldest first.
	Applied []Applied `json:"applied"`
	// Failed are rows with success = false (Flyway).
	Failed []Applied `json:"failed,omitempty"`
	// Current is the newest version in effect (zero when none).
	Current Version `json:"-"`
	// Dirty is golang-migrate's flag: a migration failed half-way.
	Dirty bool `json:"dirty"`
}

// ErrNoHistory means the history table does not exist.
var ErrNoHistory = errors.New("no migration history table")

// ReadState reads the history table of the given format (table "" means
// the format's default).
func ReadState(ctx context.Context, db DB, format Format, table string) (*State, error) {
	table = historyTable(format, table)
	st := &State{Format: format, Table: table}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up %s: %w", table, err)
	}
	if !exists {
		return nil, fmt.Errorf("%w: table %s does not exist; is this the right database (and --format)?", ErrNoHistory, table)
	}
	if format == GolangMigrate {
		var v int64
		err := db.QueryRow(ctx, `SELECT version, dirty FROM `+pgx.Identifier{table}.Sanitize()+` LIMIT 1`).Scan(&v, &st.Dirty)
		if errors.Is(err, pgx.ErrNoRows) {
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		st.at(v)
		return st, nil
	}
	rows, err := db.Query(ctx, `SELECT installed_rank, version, description, type, script, checksum,
		installed_by, installed_on, execution_time, success
		FROM `+pgx.Identifier{table}.Sanitize()+` ORDER BY installed_rank`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	var all []Applied
	for rows.Next() {
		var a Applied
		var ver *string
		if err := rows.Scan(&a.Rank, &ver, &a.Description, &a.Type, &a.Script, &a.Checksum,
			&a.InstalledBy, &a.InstalledOn, &a.ExecTimeMS, &a.Success); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		if ver != nil {
			a.VersionText = *ver
		}
		all = append(all, a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return st, replayFlyway(st, all)
}

// replayFlyway fills st from flyway_schema_history's rows in
// installed_rank order (VersionText read, Version parsed here).
func replayFlyway(st *State, all []Applied) error {
	for i := range all {
		if all[i].VersionText == "" {
			continue // repeatables and the schema marker
		}
		v, err := ParseVersion(all[i].VersionText)
		if err != nil {
			return fmt.Errorf("%s row %d: %w", st.Table, all[i].Rank, err)
		}
		all[i].Version = v
	}
	// Replay: versioned rows apply, UNDO_SQL rows (Flyway Teams) and
	// DELETE markers take a version back out.
	inEffect := map[string]int{}
	for _, a := range all {
		if !a.Success {
			st.Failed = append(st.Failed, a)
			continue
		}
		if a.Version.IsZero() {
			continue // repeatables and the schema marker
		}
		key := a.Version.String()
		switch a.Type {
		case "UNDO_SQL", "UNDO_JDBC", "UNDO_SCRIPT", "DELETE":
			if i, ok := inEffect[key]; ok {
				st.Applied[i].Success = false
				delete(inEffect, key)
			}
		default:
			inEffect[key] = len(st.Applied)
			st.Applied = append(st.Applied, a)
		}
	}
	kept := st.Applied[:0]
	for _, a := range st.Applied {
		if a.Success {
			kept = append(kept, a)
			if a.Version.Compare(st.Current) > 0 {
				st.Current = a.Version
			}
		}
	}
	st.Applied = kept
	return nil
}

// at is golang-migrate's history: one row, its version and dirty flag
// (st.Dirty, already read).
func (st *State) at(v int64) {
	st.Current = Version{parts: []uint64{uint64(v)}}
	st.Applied = []Applied{{Version: st.Current, VersionText: st.Current.String(), Success: !st.Dirty, Type: "SQL"}}
}
