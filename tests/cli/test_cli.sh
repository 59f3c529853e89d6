#!/usr/bin/env bash
# Tests of the lockstore tool, run as a user would run it.
# Usage: test_cli.sh PATH_TO_LOCKSTORE PATH_TO_AGENT_EXAMPLE
set -uo pipefail
tool=$(realpath "$1")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
export LOCKSTORE_BACKEND="sqlite:$work/locks.db"
failures=0

check() {  # description, expected, actual
  if [ "$2" == "$3" ]; then echo "ok: $1"; else echo "FAIL: $1: expected [$2], got [$3]"; failures=$((failures + 1)); fi
}
contains() {  # description, needle, haystack
  if [[ "$3" == *"$2"* ]]; then echo "ok: $1"; else echo "FAIL: $1: [$2] not in [$3]"; failures=$((failures + 1)); fi
}
wait_until_held() {  # key: polls `list` until the lease shows, for at most 10 s
  for _ in $(seq 1 1000); do
    "$tool" list --json | grep -q "\"key\":\"$1\"" && return 0
    sleep 0.01
  done
  echo "FAIL: '$1' never became held"; failures=$((failures + 1))
}

wait_for_file() {  # path: the command creates it once its traps are set, for at most 10 s
  for _ in $(seq 1 1000); do [ -e "$1" ] && return 0; sleep 0.01; done
  echo "FAIL: $1 never appeared"; failures=$((failures + 1))
}

# Exit status passthrough and the environment.
out=$("$tool" run job -- sh -c 'echo "$LOCKSTORE_KEY ${#LOCKSTORE_TOKEN} $LOCKSTORE_FENCE"; exit 7'); status=$?
check "exit status passes through" 7 "$status"
first_fence=${out##* }
check "command sees key, 32-char token and a fence" "job 32 1" "${out% *} $([ "$first_fence" -gt 0 ] 2>/dev/null && echo 1 || echo 0)"
"$tool" run job -- true; check "a second run gets a larger fence and exits 0" 0 $?
out=$("$tool" run job -- sh -c 'echo $LOCKSTORE_FENCE')
check "fences increase" 1 "$([ "$out" -gt "$first_fence" ] 2>/dev/null && echo 1 || echo 0)"
"$tool" run job -- sh -c 'kill -TERM $$'; check "a command killed by SIGTERM gives 128+15" 143 $?

# A held lock: --nonblock and --wait; list and release.
"$tool" run --owner holder --ttl 30s busy -- sleep 30 & holder=$!
wait_until_held busy
err=$("$tool" run --nonblock busy -- true 2>&1); status=$?
check "--nonblock on a held lock exits 75" 75 "$status"
err=$("$tool" run --owner holder --nonblock busy -- true 2>&1); status=$?
check "the same --owner does not get a held lock: --owner is only a label" 75 "$status"
contains "--nonblock says the key is held" "'busy' is held" "$err"
err=$("$tool" run --wait 100ms busy -- true 2>&1); status=$?
check "--wait elapsing exits 75, as a held lock does" 75 "$status"
contains "--wait says how long it waited" "after waiting 100ms" "$err"
"$tool" run -w 0.15s busy -- true 2>/dev/null; check "-w with a fractional duration waits and exits 75" 75 $?
"$tool" run -n busy -- true 2>/dev/null; check "-n is --nonblock" 75 $?
"$tool" run -n -E 3 busy -- true 2>/dev/null; check "-E chooses the status for a held lock" 3 $?
"$tool" run --conflict-exit-code 4 --wait 50ms busy -- true 2>/dev/null; check "-E also covers --wait running out" 4 $?
started=$(date +%s%N); "$tool" run --wait 0 busy -- true 2>/dev/null; status=$?; took=$(( ($(date +%s%N) - started) / 1000000 ))
check "--wait 0 is one attempt, as --nonblock" 75 "$status"
check "--wait 0 does not wait" 1 "$([ "$took" -lt 5000 ] && echo 1 || echo 0)"
err=$("$tool" run --nonblock --wait 1s busy -- true 2>&1); check "--nonblock with --wait exits 64" 64 $?
contains "--nonblock with --wait is named" "exclude each other" "$err"
out=$("$tool" --backend "$LOCKSTORE_BACKEND" list); contains "--backend may come before the command" "holder" "$out"
out=$("$tool" list); contains "list shows the key and owner" "holder" "$out"; contains "list has a header" "EXPIRES IN" "$out"
out=$("$tool" list --json); contains "list --json has the owner" '"owner":"holder"' "$out"
out=$("$tool" release busy --force); contains "release --force says whose lease it was" "held by 'holder'" "$out"
out=$("$tool" list); check "nothing is held after release" "no leases held" "$out"
kill $holder 2>/dev/null; wait $holder 2>/dev/null

# A lost lease stops what the command left running too (here a background
# sleep that outlives its shell).
"$tool" run --ttl 1s --kill-after 5s orphaned -- sh -c "trap 'exit 0' TERM; sleep 300 & echo \$! > $work/orphan.tmp; mv $work/orphan.tmp $work/orphan.pid; wait" 2>/dev/null & runner=$!
wait_for_file "$work/orphan.pid"
"$tool" release orphaned --force >/dev/null
wait $runner; check "a lost lease exits 77 with a leftover process" 77 $?
orphan=$(cat "$work/orphan.pid")
check "the command's leftover process is stopped with it" 1 "$(kill -0 "$orphan" 2>/dev/null && echo 0 || echo 1)"

# Signal forwarding.
"$tool" run sig -- sh -c "trap 'exit 9' INT; touch $work/sig-ready; sleep 30 & wait" & runner=$!
wait_for_file "$work/sig-ready"
kill -INT $runner; wait $runner; check "SIGINT is forwarded and the command's status returned" 9 $?
out=$("$tool" list); check "the lease is released after the command exits" "no leases held" "$out"

# A lease lost while the command runs: it gets SIGTERM, the tool exits 77.
"$tool" run --ttl 300ms --kill-after 5s lost -- sh -c "trap 'echo TERM > $work/got-term; exit 0' TERM; touch $work/lost-ready; sleep 30 & wait" 2>"$work/lost.err" & runner=$!
wait_for_file "$work/lost-ready"
"$tool" release lost --force >/dev/null
wait $runner; check "a lost lease exits 77" 77 $?
check "the command received SIGTERM" TERM "$(cat "$work/got-term" 2>/dev/null)"
contains "the tool says the lease was lost" "was lost" "$(cat "$work/lost.err")"

# A command that ignores SIGTERM after a lost lease gets SIGKILL after --kill-after.
"$tool" run --ttl 300ms --kill-after 300ms stubborn -- sh -c "trap '' TERM; touch $work/stubborn-ready; while :; do sleep 0.05; done" 2>"$work/stubborn.err" & runner=$!
wait_for_file "$work/stubborn-ready"
"$tool" release stubborn --force >/dev/null
wait $runner; check "a lost lease still exits 77 when SIGKILL was needed" 77 $?
contains "the tool says it sent SIGKILL" "sending SIGKILL" "$(cat "$work/stubborn.err")"

# Bad input: each its own message and status.
err=$("$tool" run k true 2>&1); check "missing -- exits 64" 64 $?; contains "missing -- is named" "missing '--'" "$err"
err=$("$tool" frobnicate 2>&1); check "unknown command exits 64" 64 $?; contains "unknown command is named" "unknown command 'frobnicate'" "$err"
err=$("$tool" run --ttl 5 k -- true 2>&1); check "duration without unit exits 64" 64 $?; contains "bad duration is named" "bad duration '5'" "$err"
err=$("$tool" run --ttl -5s k -- true 2>&1); check "negative duration exits 64" 64 $?
err=$("$tool" list --backend mysql://x 2>&1); check "bad URL exits 64" 64 $?; contains "bad URL is named" "bad --backend URL 'mysql://x'" "$err"
err=$("$tool" list --backend redis://127.0.0.1:1 2>&1); check "an unreachable Redis exits 69" 69 $?; contains "it names the server" "127.0.0.1:1" "$err"
err=$("$tool" list --backend redis://127.0.0.1:0 2>&1); check "a Redis URL with port 0 exits 64" 64 $?; contains "the port is named" "port '0'" "$err"
err=$("$tool" list --backend redis://127.0.0.1:6379/x 2>&1); check "a Redis URL with a bad database exits 64" 64 $?; contains "the database is named" "database 'x'" "$err"
err=$("$tool" list --backend "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2" 2>&1); check "an unreachable PostgreSQL exits 69" 69 $?; contains "it names the server" "127.0.0.1:1" "$err"
err=$("$tool" store stats --backend redis://127.0.0.1:1 2>&1); check "store on Redis exits 69" 69 $?; contains "it says why" "lives in a SQLite file" "$err"
err=$("$tool" release k 2>&1); check "release without --force exits 64" 64 $?
err=$("$tool" run "" -- true 2>&1); check "an empty key exits 64" 64 $?; contains "empty key is named" "must not be empty" "$err"
err=$("$tool" run k -- /no/such/command 2>&1); check "a command that does not exist exits 127" 127 $?
printf 'echo never\n' > "$work/not-executable"
err=$("$tool" run k -- "$work/not-executable" 2>&1); check "a command that exists but cannot run exits 126" 126 $?
err=$("$tool" list --backend redis://127.0.0.1:1 2>&1)
check "errors carry no internal code suffix" 0 "$(grep -c '\[lockstore:' <<< "$err")"
err=$("$tool" run --ttl 0.5ms k -- true 2>&1); check "a duration under 1 ms exits 64" 64 $?
out=$("$tool" --version); contains "--version prints the version" "lockstore 0." "$out"

# The default backend is one file per user, whatever the directory; the
# operator commands never create a database.
mkdir -p "$work/home" "$work/elsewhere" "$work/a" "$work/b"
as_user() { (unset LOCKSTORE_BACKEND XDG_STATE_HOME; export HOME="$work/home"; cd "$1" && shift && exec "$tool" "$@"); }
as_user "$work/elsewhere" run default-key -- true
check "the default database is under ~/.local/state/lockstore" 1 "$([ -e "$work/home/.local/state/lockstore/lockstore.db" ] && echo 1 || echo 0)"
as_user "$work/a" run --ttl 30s same -- sh -c "touch $work/same-ready; sleep 30" & same_holder=$!
wait_for_file "$work/same-ready"
as_user "$work/b" run -n same -- true 2>/dev/null; check "the same key from another directory is the same lock" 75 $?
kill "$same_holder" 2>/dev/null; wait "$same_holder" 2>/dev/null
check "no database in the current directory" 0 "$(ls "$work/elsewhere" | wc -l)"
err=$("$tool" list --backend "sqlite:$work/typo.db" 2>&1); check "list on a missing file exits 69" 69 $?
contains "list names the missing file" "no lockstore database at '$work/typo.db'" "$err"
check "list did not create the file" 0 "$([ -e "$work/typo.db" ] && echo 1 || echo 0)"
err=$("$tool" store stats --backend "sqlite:$work/typo.db" 2>&1); check "store on a missing file exits 69" 69 $?
err=$("$tool" release k --force --backend "sqlite:$work/typo.db" 2>&1); check "release on a missing file exits 69" 69 $?
check "neither created the file" 0 "$([ -e "$work/typo.db" ] && echo 1 || echo 0)"
cp "$work/locks.db" "$work/readonly.db" && chmod a-w "$work/readonly.db"
out=$("$tool" list --backend "sqlite:$work/readonly.db" 2>&1); check "list works on a file it may not write" 0 $?
(unset LOCKSTORE_BACKEND XDG_STATE_HOME HOME; "$tool" list > "$work/nohome.out" 2>&1; echo $? > "$work/nohome.status")
check "without HOME or a backend, a command asks for --backend (64)" 64 "$(cat "$work/nohome.status")"
contains "and says so" "give --backend" "$(cat "$work/nohome.out")"
out=$("$tool" run --help); check "run --help exits 0" 0 $?
contains "run's usage line names the command after --" "Usage: lockstore run [OPTIONS] KEY -- COMMAND [ARGS...]" "$out"

# The fence gate, as a service behind `lockstore run` would use it.
"$tool" admit s3://reports/daily.csv 100; check "admit: a first fence is admitted (0)" 0 $?
"$tool" admit s3://reports/daily.csv 100; check "admit: the same fence again (0)" 0 $?
err=$("$tool" admit s3://reports/daily.csv 99 2>&1); check "admit: a smaller fence is refused (75)" 75 $?
contains "admit says why" "larger fence was admitted before" "$err"
err=$("$tool" admit s3://reports/daily.csv x 2>&1); check "admit: a fence that is not a number exits 64" 64 $?
out=$("$tool" run gate-job -- sh -c '"$0" admit s3://reports/daily.csv "$LOCKSTORE_FENCE" && echo uploaded' "$tool")
check "run's command passes LOCKSTORE_FENCE to the gate" "uploaded" "$out"

# JSON output is valid JSON, whatever bytes a key holds (keys are bytes,
# JSON is UTF-8): a bad byte becomes U+FFFD, and key_hex has the bytes.
bad_key=$(printf 'caf\xe9-\x01"q')
"$tool" run --ttl 30s "$bad_key" -- sh -c "touch $work/bad-ready; sleep 30" & bad_holder=$!
wait_for_file "$work/bad-ready"
out=$("$tool" list --json)
parsed=$(python3 -c 'import json,sys; leases=json.load(sys.stdin); print(" ".join(sorted(l.get("key_hex","-") for l in leases)))' <<< "$out")
check "list --json with a non-UTF-8 key parses and carries its bytes in key_hex" "636166e92d012271" "$parsed"
kill "$bad_holder" 2>/dev/null; wait "$bad_holder" 2>/dev/null

# Backend addresses are parsed as URLs (Boost.URL): IPv6 hosts and
# percent-escapes; what the backends cannot do is refused by name.
err=$("$tool" list --backend 'redis://[::1]:1' 2>&1); check "an IPv6 Redis host is read (unreachable: 69)" 69 $?
contains "the IPv6 host is named without brackets" "::1" "$err"
err=$("$tool" list --backend 'redis://u:p%zz@127.0.0.1:1' 2>&1); check "a bad percent-escape exits 64" 64 $?
contains "and is named" "not a valid URL" "$err"
err=$("$tool" list --backend 'redis://:pa%40ss@127.0.0.1:1' 2>&1); check "a percent-escaped password is accepted (unreachable: 69)" 69 $?
err=$("$tool" list --backend 'rediss://127.0.0.1:6380' 2>&1); check "rediss:// exits 64" 64 $?; contains "and says TLS is not supported" "TLS" "$err"
err=$("$tool" list --backend 'unix:///tmp/redis.sock' 2>&1); check "a Unix socket URL exits 64" 64 $?; contains "and says why" "Unix sockets" "$err"
err=$("$tool" list --backend 'redis://127.0.0.1:6379/0?x=1' 2>&1); check "a Redis URL with a query exits 64" 64 $?
err=$("$tool" list --backend "host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2" 2>&1)
check "a libpq connection string is a PostgreSQL backend (unreachable: 69)" 69 $?

# The store commands.
if [ -n "${2:-}" ]; then
  out=$("$tool" store sessions --backend "sqlite:$work/locks.db"); contains "store sessions has a header" "REVISION" "$out"
  out=$("$tool" store stats --json); contains "store stats --json" '"sessions":0' "$out"
  out=$("$tool" store gc); contains "store gc reports" "gc: 0 roots" "$out"
  out=$("$tool" store gc --dry-run); contains "store gc --dry-run says it deleted nothing" "gc (dry run): 0 roots" "$out"
  out=$("$tool" store gc --dry-run --json); contains "store gc --dry-run --json" '"would_delete":0' "$out"
  out=$("$tool" store gc --dry-run --backend "sqlite:$work/readonly.db"); check "gc --dry-run works on a file it may not write" 0 $?
  err=$("$tool" store stats --dry-run 2>&1); check "--dry-run outside gc exits 64" 64 $?; contains "and says so" "only for" "$err"
fi

# The server backends, against the servers scripts/test.sh started.
if [ -z "${LOCKSTORE_TEST_POSTGRES:-}" ] || [ -z "${LOCKSTORE_TEST_REDIS:-}" ]; then
  echo "FAIL: LOCKSTORE_TEST_POSTGRES / LOCKSTORE_TEST_REDIS are not set (run scripts/test.sh)"; failures=$((failures + 1))
else
  pg_port=$(sed -E 's/.*port=([0-9]+).*/\1/' <<< "$LOCKSTORE_TEST_POSTGRES")
  out=$("$tool" run --backend "host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" conninfo-key -- sh -c 'echo $LOCKSTORE_KEY')
  check "postgres: a libpq connection string works as --backend" "conninfo-key" "$out"
  out=$("$tool" run --backend "redis://[::ffff:127.0.0.1]:${LOCKSTORE_TEST_REDIS##*:}/2" v6-key -- sh -c 'echo $LOCKSTORE_KEY' 2>&1)
  check "redis: a bracketed IPv6 host works as --backend" "v6-key" "$out"
  for backend in "postgres://postgres@127.0.0.1:$pg_port/postgres" "redis://$LOCKSTORE_TEST_REDIS/2"; do
    name=${backend%%:*}
    key="cli-$RANDOM-$RANDOM"
    out=$("$tool" run --backend "$backend" "$key" -- sh -c 'echo "$LOCKSTORE_KEY ${#LOCKSTORE_TOKEN}"; exit 3'); status=$?
    check "$name: exit status passes through" 3 "$status"
    check "$name: command sees key and token" "$key 32" "$out"
    first=$("$tool" run --backend "$backend" "$key" -- sh -c 'echo $LOCKSTORE_FENCE')
    second=$("$tool" run --backend "$backend" "$key" -- sh -c 'echo $LOCKSTORE_FENCE')
    check "$name: fences increase" 1 "$([ "$second" -gt "$first" ] && echo 1 || echo 0)"
    "$tool" run --backend "$backend" --owner holder --ttl 30s "$key" -- sleep 30 & holder=$!
    held=0
    for _ in $(seq 1 1000); do
      "$tool" list --backend "$backend" --json | grep -q "\"key\":\"$key\"" && { held=1; break; }
      sleep 0.01
    done
    check "$name: list shows the held lease" 1 "$held"
    "$tool" run --backend "$backend" --nonblock "$key" -- true 2>/dev/null; check "$name: --nonblock on a held key exits 75" 75 $?
    "$tool" run --backend "$backend" --wait 200ms "$key" -- true 2>/dev/null; check "$name: --wait gives up with 75" 75 $?
    out=$("$tool" release --backend "$backend" "$key" --force); contains "$name: release --force names the owner" "held by 'holder'" "$out"
    "$tool" run --backend "$backend" --nonblock "$key" -- true; check "$name: after release --force the key is free" 0 $?
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
  done
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
