// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The PostgreSQL backend's statements (impl/postgres.ipp), by name.
#pragma once

#include "lockstore/detail/acquire_machine.hpp"
#include "lockstore/detail/pg_connection.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

namespace lockstore {

namespace detail::postgres_sql {

/// The version of the lease table layout, recorded in lockstore_schema.
inline constexpr int schema_version = 2;

/// Channel of the release notifications; the payload is the key in hex.
inline constexpr const char* channel = "lockstore_released";

// Creating the tables is serialised by a transaction-scoped advisory lock, so
// many clients connecting to a new database at once all succeed.
inline constexpr const char* schema = R"sql(
SET client_min_messages = warning;
BEGIN;
SELECT pg_advisory_xact_lock(7526311204373160121);
CREATE TABLE IF NOT EXISTS lockstore_schema (version integer NOT NULL);
INSERT INTO lockstore_schema (version) SELECT 2 WHERE NOT EXISTS (SELECT FROM lockstore_schema);
CREATE TABLE IF NOT EXISTS lockstore_leases (
  key         bytea PRIMARY KEY,
  owner       bytea NOT NULL,
  token       text NOT NULL,
  fence       bigint NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL
);
-- Version 2: the queue of waiting acquire() callers (see acquire below).
CREATE TABLE IF NOT EXISTS lockstore_waiters (
  ticket     bigserial PRIMARY KEY,
  key        bytea NOT NULL,
  expires_at timestamptz NOT NULL,
  channel    text
);
CREATE INDEX IF NOT EXISTS lockstore_waiters_by_key ON lockstore_waiters (key, ticket);
-- Where to notify the waiter: its listening connection's own channel (NULL:
-- the shared one). Added in place to a table of lockstore 0.2.0, whose
-- clients leave it NULL. Only when missing: ALTER TABLE locks the table.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'lockstore_waiters'::regclass
                 AND attname = 'channel' AND NOT attisdropped) THEN
    ALTER TABLE lockstore_waiters ADD COLUMN channel text;
  END IF;
END $$;
-- The fence gate (PostgresLock::admit): the largest fence admitted per
-- resource. Added in place; older clients ignore it.
CREATE TABLE IF NOT EXISTS lockstore_fence_gate (
  resource bytea PRIMARY KEY,
  fence    bigint NOT NULL
);
UPDATE lockstore_schema SET version = 2 WHERE version = 1;
COMMIT;
SELECT max(version) FROM lockstore_schema;)sql";

// One clock reading (`now`, the server's) decides everything, as in the
// SQLite backend: only a free (expired or released) row is taken, whoever
// the owner (every acquisition is its own holder), with a new token and a
// fence of max(last + 1, the clock in microseconds), so fences keep growing
// even when the table is dropped and created again. When refused, the
// second branch reports how long the holder has left.
//
// The queue of acquire() callers: $5 is the caller's ticket ceiling (NULL for
// try_acquire, which ignores the queue; the largest bigint for a caller
// without a ticket yet) and $6 its ticket. A free row goes to a caller only
// when no live ticket of the key is older than its own. A refused acquire()
// takes a ticket (or refreshes its own) in the same statement; a granted one
// drops its ticket. $7 is the channel its listening connection LISTENs on
// (NULL while it has none); $8 how long a ticket lives without a refresh
// (detail::ticket_lifetime), in milliseconds.
inline constexpr detail::PgStatement acquire{"lockstore_acquire", R"sql(
WITH now AS (SELECT clock_timestamp() AS t),
granted AS (
  INSERT INTO lockstore_leases AS l (key, owner, token, fence, acquired_at, expires_at)
  SELECT $1::bytea, $2::bytea, $3::text, (extract(epoch FROM t) * 1000000)::bigint, t,
         t + $4::bigint * interval '1 millisecond' FROM now
  ON CONFLICT (key) DO UPDATE SET
    token       = excluded.token,
    fence       = greatest(l.fence + 1, excluded.fence),
    acquired_at = excluded.acquired_at,
    owner       = excluded.owner,
    expires_at  = excluded.expires_at
  WHERE l.expires_at <= excluded.acquired_at
    AND ($5::bigint IS NULL OR NOT EXISTS (
          SELECT FROM lockstore_waiters w WHERE w.key = $1::bytea AND w.ticket < $5::bigint
                                            AND w.expires_at > excluded.acquired_at))
  RETURNING l.token, l.fence),
swept AS (
  DELETE FROM lockstore_waiters w USING now
  WHERE $5::bigint IS NOT NULL AND $6::bigint IS NULL AND w.key = $1::bytea AND w.expires_at <= now.t),
queued AS (
  INSERT INTO lockstore_waiters (ticket, key, expires_at, channel)
  SELECT coalesce($6::bigint, nextval('lockstore_waiters_ticket_seq')), $1::bytea, t + $8::bigint * interval '1 millisecond', $7::text
  FROM now WHERE $5::bigint IS NOT NULL AND NOT EXISTS (SELECT FROM granted)
  ON CONFLICT (ticket) DO UPDATE SET expires_at = excluded.expires_at, channel = excluded.channel
  RETURNING ticket),
dequeued AS (
  DELETE FROM lockstore_waiters WHERE ticket = $6::bigint AND EXISTS (SELECT FROM granted))
SELECT token, fence, NULL::bigint, NULL::bigint FROM granted
UNION ALL
SELECT NULL, NULL, ceil(extract(epoch FROM (greatest(l.expires_at, now.t) - now.t)) * 1000)::bigint,
       (SELECT ticket FROM queued)
FROM lockstore_leases l, now
WHERE l.key = $1::bytea AND NOT EXISTS (SELECT FROM granted))sql"};

// An acquire() caller that gives up leaves the queue and tells the next in
// line (on that waiter's own channel; everyone when no live ticket is left).
inline constexpr detail::PgStatement leave_queue{"lockstore_leave_queue", R"sql(
WITH left_queue AS (DELETE FROM lockstore_waiters WHERE ticket = $1::bigint RETURNING key),
next AS (
  SELECT w.ticket, w.channel FROM lockstore_waiters w, left_queue
  WHERE w.key = left_queue.key AND w.ticket <> $1::bigint AND w.expires_at > clock_timestamp()
  ORDER BY w.ticket LIMIT 1)
SELECT pg_notify(coalesce((SELECT channel FROM next), 'lockstore_released'),
                 encode(key, 'hex') || coalesce(':' || (SELECT ticket FROM next), ''))
FROM left_queue)sql"};

// The explicit takeover (PostgresLock::take_over): like a try_acquire, but a
// live lease of the same owner is taken too, with a new token and a larger
// fence (its old guard is fenced out), and its expiry never moves earlier.
// The third column is how long the lease now runs (ms).
inline constexpr detail::PgStatement take_over{"lockstore_take_over", R"sql(
WITH now AS (SELECT clock_timestamp() AS t)
INSERT INTO lockstore_leases AS l (key, owner, token, fence, acquired_at, expires_at)
SELECT $1::bytea, $2::bytea, $3::text, (extract(epoch FROM t) * 1000000)::bigint, t,
       t + $4::bigint * interval '1 millisecond' FROM now
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = greatest(l.fence + 1, excluded.fence),
  acquired_at = excluded.acquired_at,
  expires_at  = CASE WHEN l.owner = excluded.owner THEN greatest(l.expires_at, excluded.expires_at)
                     ELSE excluded.expires_at END,
  owner       = excluded.owner
WHERE l.owner = excluded.owner OR l.expires_at <= excluded.acquired_at
RETURNING l.token, l.fence, floor(extract(epoch FROM (l.expires_at - l.acquired_at)) * 1000)::bigint)sql"};

inline constexpr detail::PgStatement extend{"lockstore_extend", R"sql(
UPDATE lockstore_leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
WHERE key = $1::bytea AND token = $2::text AND expires_at > clock_timestamp())sql"};

// The first query of a fenced write (PostgresLock::fenced): locks the lease
// row if `$2` still holds a live lease on `$1`, and fails with
// division_by_zero (22012) otherwise, which aborts the pipeline's implicit
// transaction before any of the caller's statements runs. The row lock holds
// until that transaction commits: an acquire of the key waits for it, and
// its own check then sees whatever this transaction left, so no other
// holder is granted between the check and the commit.
inline constexpr const char* lease_not_live_sqlstate = "22012";
inline constexpr detail::PgStatement lease_is_live{"lockstore_lease_is_live", R"sql(
SELECT 1 / (SELECT count(*)::integer FROM (
  SELECT 1 FROM lockstore_leases
  WHERE key = $1::bytea AND token = $2::text AND expires_at > clock_timestamp()
  FOR UPDATE) AS live))sql"};

/// The first keyword of `sql`, upper-cased, read as PostgreSQL's lexer
/// would: blanks (\f and \v too), empty statements (';'), `--` comments
/// (ended by \n or \r) and nested `/* */` comments are skipped. Empty when
/// the statement does not start with a word.
inline std::string first_keyword(std::string_view sql) {
  std::size_t at = 0;
  for (;;) {
    while (at < sql.size() && (std::isspace(static_cast<unsigned char>(sql[at])) != 0 || sql[at] == ';')) ++at;
    if (sql.substr(at, 2) == "--") {
      while (at < sql.size() && sql[at] != '\n' && sql[at] != '\r') ++at;
    } else if (sql.substr(at, 2) == "/*") {
      int depth = 0;
      do {
        if (sql.substr(at, 2) == "/*") {
          ++depth;
          at += 2;
        } else if (sql.substr(at, 2) == "*/") {
          --depth;
          at += 2;
        } else {
          ++at;
        }
      } while (depth > 0 && at < sql.size());
    } else {
      break;
    }
  }
  std::string word;
  while (at < sql.size() && std::isalpha(static_cast<unsigned char>(sql[at])) != 0)
    word += static_cast<char>(std::toupper(static_cast<unsigned char>(sql[at++])));
  return word;
}

/// The statements a fenced write runs: reads, writes and DDL on the
/// caller's tables. Everything else is refused, among them what could end
/// the transaction early (COMMIT, CALL of a procedure that commits, DO) or
/// change the session lockstore's connection keeps (SET, RESET, DISCARD,
/// DEALLOCATE, LISTEN) or hang it (COPY).
inline bool allowed_in_fenced_write(std::string_view sql) {
  static constexpr std::array<std::string_view, 14> allowed = {"SELECT", "INSERT", "UPDATE",   "DELETE", "MERGE",
                                                               "WITH",   "VALUES", "TABLE",    "CREATE", "ALTER",
                                                               "DROP",   "TRUNCATE", "COMMENT", "LOCK"};
  const auto word = first_keyword(sql);
  return std::find(allowed.begin(), allowed.end(), word) != allowed.end();
}

/// Whether `text` holds `word` (lower case), in any case.
inline bool mentions(std::string_view text, std::string_view word) {
  for (std::size_t at = 0; at + word.size() <= text.size(); ++at) {
    bool same = true;
    for (std::size_t i = 0; i < word.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(text[at + i])) == word[i];
    if (same) return true;
  }
  return false;
}

/// What a fenced write's statement must not touch: lockstore's tables
/// (lockstore_*), and the session's settings (set_config, search_path: a
/// changed search_path would point lockstore's own statements on this
/// connection at other tables). A plain text search, so a mention in a
/// string or comment is refused too; it cannot see a function that does
/// these on the caller's behalf. Returns what was found, or "".
inline std::string_view touches_lockstore(std::string_view sql) {
  for (const std::string_view word : {"lockstore_", "set_config", "search_path"})
    if (mentions(sql, word)) return word;
  return {};
}

// The fence gate: one statement, so the read and the write are atomic.
inline constexpr detail::PgStatement admit{"lockstore_admit", R"sql(
INSERT INTO lockstore_fence_gate AS g (resource, fence) VALUES ($1::bytea, $2::bigint)
ON CONFLICT (resource) DO UPDATE SET fence = excluded.fence WHERE excluded.fence >= g.fence
RETURNING fence)sql"};

// A released row keeps its fence; the notification goes out at commit. Its
// payload is the key in hex, then ':' and the next ticket in line: only that
// waiter needs to look again, so it goes to that waiter's own channel (its
// process alone wakes). With no live ticket in sight it goes to everyone,
// without a ticket: the statement's snapshot may predate a waiter queueing
// at this very moment (whose later ticket is never next while an older one
// is in sight), so "nobody waits" cannot be trusted here, unlike in Redis,
// whose scripts run one at a time.
inline constexpr detail::PgStatement release{"lockstore_release", R"sql(
WITH cleared AS (
  UPDATE lockstore_leases SET owner = ''::bytea, token = '', expires_at = '-infinity'
  WHERE key = $1::bytea AND token = $2::text RETURNING key),
next AS (
  SELECT w.ticket, w.channel FROM lockstore_waiters w, cleared
  WHERE w.key = cleared.key AND w.expires_at > clock_timestamp()
  ORDER BY w.ticket LIMIT 1)
SELECT pg_notify(coalesce((SELECT channel FROM next), 'lockstore_released'),
                 encode(key, 'hex') || coalesce(':' || (SELECT ticket FROM next), ''))
FROM cleared)sql"};

// The operator paths report the rows as they were before clearing them.
inline constexpr detail::PgStatement release_owned{"lockstore_release_owned", R"sql(
WITH old AS (
  SELECT key, expires_at FROM lockstore_leases WHERE owner = $1::bytea AND token <> '' FOR UPDATE),
cleared AS (
  UPDATE lockstore_leases l SET owner = ''::bytea, token = '', expires_at = '-infinity' FROM old
  WHERE l.key = old.key RETURNING l.key, old.expires_at > clock_timestamp() AS live)
SELECT live, pg_notify('lockstore_released', encode(key, 'hex')) FROM cleared)sql"};

inline constexpr detail::PgStatement force_release{"lockstore_force_release", R"sql(
WITH old AS (
  SELECT key, owner, fence, acquired_at, expires_at FROM lockstore_leases
  WHERE key = $1::bytea AND token <> '' AND expires_at > clock_timestamp() FOR UPDATE),
cleared AS (
  UPDATE lockstore_leases l SET owner = ''::bytea, token = '', expires_at = '-infinity' FROM old
  WHERE l.key = old.key
  RETURNING old.owner, old.fence, old.acquired_at, old.expires_at, l.key)
SELECT owner, fence, (extract(epoch FROM acquired_at) * 1000)::bigint, (extract(epoch FROM expires_at) * 1000)::bigint,
       pg_notify('lockstore_released', encode(key, 'hex'))
FROM cleared)sql"};

inline constexpr detail::PgStatement list{"lockstore_list", R"sql(
SELECT key, owner, fence, (extract(epoch FROM acquired_at) * 1000)::bigint, (extract(epoch FROM expires_at) * 1000)::bigint
FROM lockstore_leases WHERE token <> '' AND expires_at > clock_timestamp() ORDER BY key)sql"};

}  // namespace detail::postgres_sql

}  // namespace lockstore
