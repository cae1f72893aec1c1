#!/usr/bin/env bash
# Installs what rollback's build, tests and demo need and a fresh machine
# may lack: Debian's etcd-server (the sandbox's etcd), PostgreSQL and Prometheus, and
# checks that kubectl is there. Go modules are fetched by the go command itself.
# 'install-deps.sh demo' installs only what the demo uses; the tests' own
# peers (Alertmanager, a headless Chromium, Redis for Argo CD) come with the
# default, 'test', with MariaDB for the MySQL-family tests. git (with its http-backend) serves the GitOps tests' repositories.
set -euo pipefail
profile=${1:-test}

need=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl) # the demo asks Prometheus when the errors show
# PostgreSQL 15 (initdb, pg_ctl, pg_dump, pg_restore, pgbench) for the database
# tests and the postgres user the test server runs as.
{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; } || need+=(postgresql-15)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client-15)
# MariaDB 10.11 (mariadbd, mariadb-install-db, mariadb-dump) for the MySQL-family
# down migrations' tests; the tests start their own server.
if [ "$profile" = test ]; then
  command -v mariadb-install-db >/dev/null 2>&1 && { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } || need+=(mariadb-server mariadb-client)
fi
# Prometheus for the metrics provider's tests.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if [ "$profile" = test ]; then
  # Alertmanager, whose webhook triggers 'rollback serve' in the tests.
  command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
  # Headless Chromium for the dashboard's browser tests.
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # Redis, which the real Argo CD controllers of the GitOps tests use.
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "install-deps: kubectl not found; the end-to-end tests compare with the real kubectl" >&2
  exit 1
fi
command -v go >/dev/null 2>&1 || { echo "install-deps: Go is required (https://go.dev/dl)" >&2; exit 1; }
