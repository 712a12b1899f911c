#!/usr/bin/env bash
# The PostgreSQL the test suite's PostgreSQL half runs on. Prints the URL to use on stdout (and writes it to
# .test-postgres-url, which tests/servers.py reads when CARGOHOLD_TEST_POSTGRES_URL is unset); messages go to stderr.
#
#   1. If a PostgreSQL answers at CARGOHOLD_TEST_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/test)
#      and lets us in to that database, use it.
#   2. Otherwise run a private cluster: install PostgreSQL from Debian when it is missing, initdb a data directory
#      under CARGOHOLD_TEST_PG_DIR (default /tmp/cargohold-test-postgres) with trust auth on loopback only, start it
#      on a free port (as the `postgres` user when run as root: PostgreSQL refuses to run as root), create `test`.
#      A later run reuses and, if needed, restarts the same cluster.
#
# `scripts/ensure-services.sh stop` stops the private cluster (its data directory stays for the next run) and
# forgets its URL in .test-postgres-url.
set -euo pipefail

project=$(cd "$(dirname "$0")/.." && pwd)
default_url="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
url=${CARGOHOLD_TEST_POSTGRES_URL:-$default_url}
state=${CARGOHOLD_TEST_PG_DIR:-${TMPDIR:-/tmp}/cargohold-test-postgres}
url_file=${CARGOHOLD_TEST_PG_URL_FILE:-$project/.test-postgres-url}
python=${CARGOHOLD_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$project/.venv/bin/python" ]; then python="$project/.venv/bin/python"; else python=python3; fi
fi

say() { echo "ensure-services: $*" >&2; }

# Can we log in to the database at this URL? asyncpg (the driver the tests use) when importable, else psql.
answers() {
  local plain=${1/postgresql+asyncpg:/postgresql:}
  if "$python" -c 'import asyncpg' 2>/dev/null; then
    "$python" - "$plain" <<'EOF' 2>/dev/null
import asyncio, sys
import asyncpg

async def probe() -> None:
    conn = await asyncpg.connect(sys.argv[1], timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

asyncio.run(probe())
EOF
  elif command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=5 psql -X -q -w -d "$plain" -c 'SELECT 1' >/dev/null 2>&1
  else
    return 1
  fi
}

publish() {
  echo "$1" >"$url_file"
  echo "$1"
}

# Run a PostgreSQL binary as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

install_postgresql() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian's postgresql"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

stop_private() {
  local bindir
  bindir=$(pg_bindir) || exit 0
  if [ -f "$state/data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$state/data" status >/dev/null 2>&1; then
    as_owner "$bindir/pg_ctl" -D "$state/data" -m fast -w stop >&2
  fi
  # The tests must not keep reading a URL at which nothing answers any more.
  local port
  port=$(cat "$state/port" 2>/dev/null || true)
  if [ -n "$port" ] && grep -qs "@127.0.0.1:$port/" "$url_file"; then
    rm -f "$url_file"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_private
  exit 0
fi

if answers "$url"; then
  publish "$url"
  exit 0
fi
say "no PostgreSQL lets us in at ${url}; using a private cluster in $state"

bindir=$(pg_bindir) || { install_postgresql; bindir=$(pg_bindir); } || {
  say "PostgreSQL is not installed and could not be installed"
  exit 1
}
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
fi

mkdir -p "$state"
[ "$(id -u)" -eq 0 ] && chown postgres: "$state"
exec 9>"$state/lock"
flock 9  # concurrent `make test` runs (other worktrees) share one cluster

data="$state/data"
if [ ! -f "$data/PG_VERSION" ]; then
  rm -rf "$data"
  say "initdb $data"
  as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$state/initdb.log" 2>&1 || {
    tail -n 20 "$state/initdb.log" >&2
    exit 1
  }
  # Loopback only, and a throwaway cluster's settings: no fsync, room for many test servers' pools.
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$state'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
fi

port=$(cat "$state/port" 2>/dev/null || true)
if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  for _ in 1 2 3; do
    if [ -z "$port" ] || ! port_free "$port"; then port=$(free_port); fi
    echo "$port" >"$state/port"
    # 9>&-: the server must not inherit (and so hold forever) the lock.
    if as_owner "$bindir/pg_ctl" -D "$data" -l "$state/postgresql.log" -o "-p $port" -w -t 60 start >/dev/null 9>&-; then
      break
    fi
    tail -n 20 "$state/postgresql.log" >&2
    port=""
  done
fi
[ -n "$port" ] || { say "the private cluster did not start (log: $state/postgresql.log)"; exit 1; }

private="postgresql+asyncpg://postgres@127.0.0.1:$port/test"
if ! answers "$private"; then
  as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres test 2>/dev/null || true
fi
answers "$private" || { say "the private cluster on port $port does not let us in (log: $state/postgresql.log)"; exit 1; }
say "private PostgreSQL on 127.0.0.1:$port (stop it with: scripts/ensure-services.sh stop)"
publish "$private"
