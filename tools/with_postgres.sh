#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL 15 cluster:
#
#   tools/with_postgres.sh CMD [ARGS...]
#
# initdb's a cluster into a temporary folder, starts it listening only on a Unix socket in that
# folder (no TCP port), creates the database `pocketrec`, exports
#   POCKETREC_TEST_POSTGRES=postgresql:///pocketrec?host=<folder>&user=postgres
# (and POCKETREC_TEST_PGDATA, POCKETREC_TEST_PGBIN: the cluster's data folder and binaries), runs
# CMD, then stops the cluster and removes the folder (also when CMD fails or is
# interrupted). Exits with CMD's status. As root, the cluster runs as the `postgres` user (initdb
# refuses root); otherwise as the calling user. When the PostgreSQL binaries are missing and this
# runs as root, `apt-get install -y postgresql` installs them first.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

find_bindir() {
    local candidate
    if candidate=$(command -v pg_ctl 2>/dev/null) && [[ -x "$(dirname "$candidate")/initdb" ]]; then
        dirname "$(readlink -f "$candidate")"
        return 0
    fi
    for candidate in /usr/lib/postgresql/*/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! bindir=$(find_bindir); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "with_postgres: PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql" >&2
        exit 2
    fi
    echo "with_postgres: installing PostgreSQL (apt-get install -y postgresql)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(find_bindir) || { echo "with_postgres: still no initdb after apt-get" >&2; exit 2; }
fi

# /tmp, not $TMPDIR: the postgres user must reach it and a socket path has ~100 bytes at most
work=$(mktemp -d /tmp/pocketrec-pg.XXXXXX)
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres: "$work"
    as_owner=(runuser -u postgres --)
fi

stop_cluster() {
    if [[ -f "$work/data/postmaster.pid" ]]; then
        "${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as_owner[@]}" "$bindir/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C \
    --no-sync >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 2; }
"${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $work -c max_connections=200" start >/dev/null \
    || { cat "$work/server.log" >&2; exit 2; }
"$bindir/psql" -X -q -h "$work" -U postgres -d postgres -c "CREATE DATABASE pocketrec" >/dev/null

export POCKETREC_TEST_POSTGRES="postgresql:///pocketrec?host=$work&user=postgres"
# for tools that restart the cluster (bench/bench_server.py --faults): its data folder, binaries
export POCKETREC_TEST_PGDATA="$work/data" POCKETREC_TEST_PGBIN="$bindir"
echo "with_postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on $work" >&2
status=0
"$@" || status=$?
exit "$status"
