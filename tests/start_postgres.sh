#!/bin/sh
# Start a throwaway PostgreSQL cluster on 127.0.0.1 for the storage tests and print its URL on stdout.
#   export AMQPD_TEST_POSTGRES_URL="$(tests/start_postgres.sh)"
# Installs Debian's postgresql package first when no server binaries are found (needs root).
# Stop it with the pg_ctl command printed on stderr.
set -eu

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN="$(find_bin)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    echo "installing postgresql..." >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
    BIN="$(find_bin)"
fi

BASE="$(mktemp -d "${TMPDIR:-/tmp}/amqpd-pg.XXXXXX")"
PORT="${PGPORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

# The server refuses to run as root: run it as the postgres system user when we are root.
if [ "$(id -u)" = 0 ]; then
    chown postgres "$BASE"
    AS="runuser -u postgres --"
else
    AS=""
fi

$AS "$BIN/initdb" -D "$BASE/data" -A trust -U amqpd -E UTF8 >"$BASE/initdb.log" 2>&1
$AS "$BIN/pg_ctl" -D "$BASE/data" -l "$BASE/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $BASE -c fsync=on" start >&2
$AS "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U amqpd amqpd_test

echo "stop with: $AS $BIN/pg_ctl -D $BASE/data stop && rm -rf $BASE" >&2
echo "postgresql://amqpd@127.0.0.1:$PORT/amqpd_test"
