package migrate

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A snapshot without pg_dump: where PostgreSQL's client tools are not
// installed (the shipped container image has none), the tables are copied
// out with COPY through the driver, one CSV with a header row per table in
// a tar archive, inside one repeatable-read transaction so the tables are
// consistent with each other. It keeps the data (the values a dropped
// column held, the rows a DELETE removes), not the DDL: the restore puts
// rows back into tables of the same shape with \copy.

// pgDumpAvailable reports whether pg_dump can be run here.
func pgDumpAvailable() bool {
	_, err := exec.LookPath("pg_dump")
	return err == nil
}

// nativeSnapshot writes the tables (all user tables when tables is nil)
// to path as a tar of CSV files, and returns the tables it found and the
// restore instructions.
func nativeSnapshot(ctx context.Context, dsn string, tables []string, path string) (found []string, restore string, err error) {
	cfg, err := connConfig(dsn, "")
	if err != nil {
		return nil, "", err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("connect: %v", Redact(err.Error(), dsn))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, "", err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if tables == nil {
		rows, err := tx.Query(ctx, `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
			WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
		if err != nil {
			return nil, "", err
		}
		if tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, "", err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	var how []string
	for _, t := range tables {
		// The canonical, quoted name; NULL for a table that does not
		// exist (an undo's IF EXISTS), which is skipped as pg_dump does.
		var name *string
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1)::text`, t).Scan(&name); err != nil {
			return nil, "", fmt.Errorf("table %s: %w", t, err)
		}
		if name == nil {
			continue
		}
		tmp, err := os.CreateTemp("", "rollback-copy-*.csv")
		if err != nil {
			return nil, "", err
		}
		os.Remove(tmp.Name()) // unnamed: production data never lingers
		if _, err := tx.Conn().PgConn().CopyTo(ctx, tmp, "COPY "+*name+" TO STDOUT (FORMAT csv, HEADER)"); err != nil {
			tmp.Close()
			return nil, "", fmt.Errorf("copy %s: %w", *name, err)
		}
		size, _ := tmp.Seek(0, io.SeekCurrent)
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			tmp.Close()
			return nil, "", err
		}
		file := strings.NewReplacer(`"`, "", "/", "_").Replace(*name) + ".csv"
		if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o600, Size: size, ModTime: time.Now()}); err != nil {
			tmp.Close()
			return nil, "", err
		}
		_, err = io.Copy(tw, tmp)
		tmp.Close()
		if err != nil {
			return nil, "", err
		}
		found = append(found, *name)
		how = append(how, fmt.Sprintf(`\copy %s FROM '%s' (FORMAT csv, HEADER)`, *name, file))
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := f.Sync(); err != nil {
		return nil, "", err
	}
	restore = "tar -xf " + path + " && psql --single-transaction"
	for _, h := range how {
		restore += fmt.Sprintf(" -c %q", h)
	}
	return found, restore, nil
}
