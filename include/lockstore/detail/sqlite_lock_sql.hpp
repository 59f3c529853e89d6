// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The SQLite lock's statements (impl/sqlite_lock.ipp).
#pragma once


namespace lockstore {

namespace detail::sqlite_lock_sql {

// A single statement is its own transaction, and SQLite takes the write lock
// before it reads (OP_Transaction with the write flag), so this upsert is
// already a read-then-write under the write lock, as BEGIN IMMEDIATE would be.
// Its clock is read by lockstore_now_ms() in the statement, so after that
// lock is held: a statement that waited seconds for another connection's
// write still gives its lease the full TTL from the moment it runs.
//
// The clock has whole milliseconds: a lease runs to now + ttl + 1 ms, so that
// it never ends before the holder's valid_until (its request's send time +
// ttl), however late in its millisecond the statement ran.
//
// The row is taken only when it is free (expired or released): every
// acquisition is its own holder, whoever the owner. The fence is
// max(last + 1, the clock in microseconds), so fences keep growing even
// when the file is deleted and created again.
inline constexpr const char* acquire = R"sql(
INSERT INTO lockstore_leases (key, owner, token, fence, acquired_ms, expires_ms)
SELECT ?1, ?2, ?3, now.ms * 1000, now.ms, now.ms + ?4 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now WHERE true
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = max(fence + 1, excluded.fence),
  acquired_ms = excluded.acquired_ms,
  owner       = excluded.owner,
  expires_ms  = excluded.expires_ms
WHERE expires_ms <= excluded.acquired_ms
  AND (?5 IS NULL OR NOT EXISTS (SELECT 1 FROM lockstore_waiters AS w
                                 WHERE w.key = excluded.key AND w.ticket < ?5
                                   AND w.expires_ms > excluded.acquired_ms))
RETURNING token, fence)sql";

// The explicit takeover (SqliteLock::take_over): like acquire, but a live
// lease of the same owner is taken too, with a new token and a larger fence
// (its old guard is fenced out), and its expiry never moves earlier. It
// returns how long the lease now runs (the new guard's valid_until).
inline constexpr const char* take_over = R"sql(
INSERT INTO lockstore_leases (key, owner, token, fence, acquired_ms, expires_ms)
SELECT ?1, ?2, ?3, now.ms * 1000, now.ms, now.ms + ?4 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now WHERE true
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = max(fence + 1, excluded.fence),
  acquired_ms = excluded.acquired_ms,
  expires_ms  = max(CASE WHEN owner = excluded.owner THEN expires_ms ELSE 0 END, excluded.expires_ms),
  owner       = excluded.owner
WHERE owner = excluded.owner OR expires_ms <= excluded.acquired_ms
RETURNING token, fence, expires_ms - acquired_ms - 1)sql";

// The queue of acquire() callers (schema v3). ?5 above is the caller's
// ticket: older live tickets go first. NULL (try_acquire) ignores the queue;
// a caller without a ticket yet passes the largest integer, behind everyone.
inline constexpr const char* take_ticket = R"sql(
INSERT INTO lockstore_waiters (ticket, key, expires_ms) VALUES (?1, ?2, ?3)
ON CONFLICT (ticket) DO UPDATE SET expires_ms = excluded.expires_ms
RETURNING ticket)sql";

inline constexpr const char* drop_expired_tickets =
    "DELETE FROM lockstore_waiters WHERE key = ?1 AND expires_ms <= ?2";

inline constexpr const char* drop_ticket = "DELETE FROM lockstore_waiters WHERE ticket = ?1";

inline constexpr const char* next_ticket =
    "SELECT ticket FROM lockstore_waiters WHERE key = ?1 AND expires_ms > ?2 ORDER BY ticket LIMIT 1";

inline constexpr const char* holder = "SELECT token, expires_ms FROM lockstore_leases WHERE key = ?1";

// The clock is read under the write lock, as in acquire.
inline constexpr const char* extend = R"sql(
UPDATE lockstore_leases SET expires_ms = now.ms + ?3 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now
WHERE key = ?1 AND token = ?2 AND expires_ms > now.ms)sql";

inline constexpr const char* release =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE key = ?1 AND token = ?2";

// RETURNING reports the row after the update, so the operator paths that
// report what they cleared read first, in the same BEGIN IMMEDIATE.
inline constexpr const char* owned_by = R"sql(
SELECT key, token, expires_ms > ?2 FROM lockstore_leases WHERE owner = ?1 AND token <> '')sql";

inline constexpr const char* release_owned =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE owner = ?1 AND token <> ''";

inline constexpr const char* held = R"sql(
SELECT owner, fence, acquired_ms, expires_ms, token FROM lockstore_leases WHERE key = ?1 AND token <> '')sql";

inline constexpr const char* clear =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE key = ?1";

inline constexpr const char* list = R"sql(
SELECT key, owner, fence, acquired_ms, expires_ms FROM lockstore_leases
WHERE expires_ms > ?1 ORDER BY key)sql";

}  // namespace detail::sqlite_lock_sql

}  // namespace lockstore
