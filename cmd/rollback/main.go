// Command rollback makes deployment rollback a planned, tested,
// minutes-long operation. See `rollback --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rollback-dev/rollback/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	io := cli.System()
	cli.RouteClientLogs(io.ErrOut, time.Now)
	code := cli.Main(ctx, filepath.Base(os.Args[0]), os.Args[1:], io)
	stop()
	os.Exit(code)
}
