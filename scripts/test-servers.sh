#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis servers for the test suites: loopback only,
# on free ports, with all state in one directory that `down` removes.
#
#   test-servers.sh up DIR                 start both; writes DIR/env (sourceable)
#   test-servers.sh down DIR               stop both, remove DIR
#   test-servers.sh postgres start|stop|restart DIR
#   test-servers.sh redis start|stop|restart DIR [redis-server options...]
#
# DIR/env exports LOCKSTORE_TEST_POSTGRES (a libpq conninfo) and
# LOCKSTORE_TEST_REDIS (host:port). PostgreSQL refuses to run as root, so
# as root the cluster runs as the `postgres` user. A server that does not
# come up is an error that says why (its log is printed).
set -euo pipefail

pg_bin=${LOCKSTORE_PG_BIN:-/usr/lib/postgresql/15/bin}

die() { echo "test-servers: $*" >&2; exit 1; }

# Ports come from below the kernel's ephemeral range: a port in that range
# can be the local end of some client connection at the moment a server
# binds it ("Address already in use" although nothing listens there).
free_port() {  # a loopback port nothing listens on
  local port low=32768 span
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$low" -gt 12000 ] || low=32768
  span=$(( low - 11000 ))
  for _ in $(seq 1 200); do
    port=$(( 10000 + (RANDOM * 32768 + RANDOM) % span ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  die "no free loopback port found"
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_start() {
  local dir=$1 port
  mkdir -p "$dir/postgres"
  # The postgres user must be able to reach its directory through DIR.
  [ "$(id -u)" -ne 0 ] || { chmod o+x "$dir"; chown postgres: "$dir/postgres"; }
  chmod 700 "$dir/postgres"
  [ -x "$pg_bin/initdb" ] || die "PostgreSQL binaries not found in $pg_bin (install postgresql-15)"
  if [ ! -f "$dir/postgres/data/PG_VERSION" ]; then
    as_postgres "$pg_bin/initdb" -D "$dir/postgres/data" -U postgres --auth=trust --no-sync \
      > "$dir/postgres/initdb.log" 2>&1 || { cat "$dir/postgres/initdb.log" >&2; die "initdb failed"; }
  fi
  # A restart keeps its port; a first start that loses a race for its port
  # (another suite's server took it) tries another one.
  local fixed=false attempt
  [ ! -f "$dir/postgres/port" ] || fixed=true
  for attempt in 1 2 3 4 5; do
    port=$(cat "$dir/postgres/port" 2>/dev/null || free_port)
    echo "$port" > "$dir/postgres/port"
    if as_postgres "$pg_bin/pg_ctl" -D "$dir/postgres/data" -l "$dir/postgres/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/postgres -c max_connections=300 -c fsync=off" \
        start > /dev/null; then
      return 0
    fi
    if $fixed || ! grep -q "already in use" "$dir/postgres/server.log" 2>/dev/null; then break; fi
    echo "test-servers: port $port was taken, trying another (attempt $attempt)" >&2
    rm -f "$dir/postgres/port" "$dir/postgres/server.log"
  done
  cat "$dir/postgres/server.log" >&2 || true
  die "PostgreSQL did not start on 127.0.0.1:$port"
}

postgres_stop() {
  local dir=$1
  [ -f "$dir/postgres/data/postmaster.pid" ] || return 0
  as_postgres "$pg_bin/pg_ctl" -D "$dir/postgres/data" -m immediate -w -t 60 stop > /dev/null || true
}

redis_start() {
  local dir=$1 port; shift
  mkdir -p "$dir/redis"
  command -v redis-server > /dev/null || die "redis-server not found (install redis-server)"
  [ $# -eq 0 ] || printf '%s\n' "$@" > "$dir/redis/options"
  local options=()
  [ ! -f "$dir/redis/options" ] || mapfile -t options < "$dir/redis/options"
  # As for PostgreSQL: a restart keeps its port, a first start may retry.
  local fixed=false attempt
  [ ! -f "$dir/redis/port" ] || fixed=true
  for attempt in 1 2 3 4 5; do
    port=$(cat "$dir/redis/port" 2>/dev/null || free_port)
    echo "$port" > "$dir/redis/port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --dir "$dir/redis" --daemonize yes \
      --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/server.log" "${options[@]}"
    # Up means: our own server wrote its pid file (Redis does that after it
    # has bound the port) and answers. A server that was already on the port
    # would answer too, so the answer alone proves nothing.
    for _ in $(seq 1 500); do
      if grep -q "already in use" "$dir/redis/server.log" 2>/dev/null; then break; fi
      if [ -s "$dir/redis/redis.pid" ] && kill -0 "$(cat "$dir/redis/redis.pid")" 2>/dev/null &&
         timeout 5 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -qE "PONG|NOAUTH"; then
        return 0
      fi
      sleep 0.02
    done
    if $fixed || ! grep -q "already in use" "$dir/redis/server.log" 2>/dev/null; then break; fi
    echo "test-servers: port $port was taken, trying another (attempt $attempt)" >&2
    rm -f "$dir/redis/port" "$dir/redis/server.log" "$dir/redis/redis.pid"
  done
  cat "$dir/redis/server.log" >&2 || true
  die "Redis did not start on 127.0.0.1:$port"
}

redis_stop() {
  local dir=$1 pid
  [ -f "$dir/redis/redis.pid" ] || return 0
  pid=$(cat "$dir/redis/redis.pid")
  kill -9 "$pid" 2>/dev/null || true   # a crash: nothing is saved on the way down
  for _ in $(seq 1 500); do kill -0 "$pid" 2>/dev/null || break; sleep 0.01; done
  rm -f "$dir/redis/redis.pid"
}

command=${1:-}; shift || true
case "$command" in
  up)
    dir=$1; mkdir -p "$dir"
    postgres_start "$dir"
    redis_start "$dir"
    cat > "$dir/env" <<ENV
export LOCKSTORE_TEST_POSTGRES="host=127.0.0.1 port=$(cat "$dir/postgres/port") user=postgres dbname=postgres"
export LOCKSTORE_TEST_REDIS="127.0.0.1:$(cat "$dir/redis/port")"
export LOCKSTORE_TEST_SERVERS="$dir"
ENV
    ;;
  down)
    dir=$1
    postgres_stop "$dir"; redis_stop "$dir"
    rm -rf "$dir"
    ;;
  postgres|redis)
    action=$1 dir=$2; shift 2
    case "$action" in
      start) "${command}_start" "$dir" "$@" ;;
      stop) "${command}_stop" "$dir" ;;
      restart) "${command}_stop" "$dir"; "${command}_start" "$dir" "$@" ;;
      *) die "unknown action '$action' (start, stop, restart)" ;;
    esac
    ;;
  *) die "usage: test-servers.sh up|down DIR, or postgres|redis start|stop|restart DIR" ;;
esac
