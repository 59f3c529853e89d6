// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The schema of a lockstore SQLite file, in one place. `PRAGMA user_version`
// holds its version; migrations[i] upgrades a file from version i to i + 1,
// so every version ever released has a path to the current one. lockstore
// owns the user_version of its file: a file carrying a version it does not
// know is refused rather than guessed at.
#pragma once

#include "lockstore/detail/random.hpp"
#include "lockstore/detail/sqlite_connection.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace lockstore::detail {

/// Leases: one row per key ever locked. A released or expired lease keeps its
/// row (owner and token cleared, expires_ms 0) so the key's fence keeps
/// counting up across release, expiry and restarts. Times are Unix epoch
/// milliseconds on the system clock (see docs/DECISIONS.md, "Clock").
inline constexpr const char* schema_v1 = R"sql(
CREATE TABLE lockstore_leases (
  key         TEXT PRIMARY KEY NOT NULL,
  owner       TEXT NOT NULL,
  token       TEXT NOT NULL,
  fence       INTEGER NOT NULL,
  acquired_ms INTEGER NOT NULL,
  expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;
)sql";

/// Version 2 adds the SessionStore. Blobs are content-addressed (SHA-256);
/// lockstore_blob_parts records which blobs a checkpoint manifest names, so
/// GC marks with set-based SQL instead of decoding every manifest. Work items
/// carry the token of the claim holding them; claim fences come from
/// lockstore_counters. Graph nodes keep insertion order in `seq`.
inline constexpr const char* schema_v2 = R"sql(
CREATE TABLE lockstore_blobs (
  id    INTEGER PRIMARY KEY,
  hash  TEXT NOT NULL UNIQUE,
  size  INTEGER NOT NULL,
  bytes BLOB NOT NULL
);
CREATE TABLE lockstore_blob_parts (
  manifest_hash TEXT NOT NULL REFERENCES lockstore_blobs (hash) ON DELETE CASCADE,
  part_hash     TEXT NOT NULL,
  PRIMARY KEY (manifest_hash, part_hash)
) WITHOUT ROWID;
CREATE TABLE lockstore_pins (
  hash  TEXT PRIMARY KEY NOT NULL,
  count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE lockstore_sessions (
  session_id      TEXT PRIMARY KEY NOT NULL,
  head_revision   INTEGER NOT NULL,
  checkpoint_hash TEXT NOT NULL,
  updated_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE lockstore_work_items (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id       TEXT NOT NULL,
  payload          BLOB NOT NULL,
  dedupe_key       TEXT,
  not_before_ms    INTEGER NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0,
  claim_token      TEXT,
  claim_expires_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX lockstore_work_items_by_session ON lockstore_work_items (session_id, id);
CREATE INDEX lockstore_work_items_by_claim ON lockstore_work_items (claim_token) WHERE claim_token IS NOT NULL;
CREATE UNIQUE INDEX lockstore_work_items_dedupe ON lockstore_work_items (session_id, dedupe_key)
  WHERE dedupe_key IS NOT NULL;
CREATE TABLE lockstore_claims (
  token      TEXT PRIMARY KEY NOT NULL,
  session_id TEXT NOT NULL,
  owner      TEXT NOT NULL,
  fence      INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE lockstore_counters (
  name  TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO lockstore_counters VALUES ('claim_fence', 0);
CREATE TABLE lockstore_graph_nodes (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id TEXT NOT NULL,
  node_id    TEXT NOT NULL,
  parent_id  TEXT,
  payload    BLOB NOT NULL,
  tombstoned INTEGER NOT NULL DEFAULT 0,
  UNIQUE (session_id, node_id)
);
CREATE INDEX lockstore_graph_nodes_by_parent ON lockstore_graph_nodes (session_id, parent_id);
)sql";

/// Version 3 adds the queue of waiting acquirers: acquire() takes a ticket
/// when refused and is granted a free lease only when no live ticket of the
/// key is older than its own, so waiters are served first come, first
/// served. A ticket whose waiter stopped refreshing it (a killed process)
/// expires and no longer holds anyone up.
inline constexpr const char* schema_v3 = R"sql(
CREATE TABLE lockstore_waiters (
  ticket     INTEGER PRIMARY KEY AUTOINCREMENT,
  key        TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX lockstore_waiters_by_key ON lockstore_waiters (key, ticket);
)sql";

/// Version 4: garbage collection that follows the garbage. Each blob counts
/// its references (session heads, pins, and the manifests that name it as a
/// part) and remembers when it was last stored or lost a reference; a blob
/// whose count falls to 0, or that is stored unreferenced, enters
/// lockstore_gc_queue with the time it did, and gc() reads only that queue,
/// in short batches. Processes of lockstore 0.3 must be stopped before a
/// file is migrated: they keep writing without counting references. A dedupe key is unique only among items no claim
/// holds (new work never folds into an item being processed).
inline constexpr const char* schema_v4 = R"sql(
ALTER TABLE lockstore_blobs ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lockstore_blobs ADD COLUMN touched_ms INTEGER NOT NULL DEFAULT 0;
CREATE TABLE lockstore_gc_queue (
  hash     TEXT PRIMARY KEY NOT NULL,
  since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX lockstore_gc_queue_by_since ON lockstore_gc_queue (since_ms);
CREATE INDEX lockstore_blob_parts_by_part ON lockstore_blob_parts (part_hash);
CREATE INDEX lockstore_sessions_by_checkpoint ON lockstore_sessions (checkpoint_hash);
UPDATE lockstore_blobs SET refs =
    (SELECT COUNT(*) FROM lockstore_sessions s WHERE s.checkpoint_hash = lockstore_blobs.hash)
  + COALESCE((SELECT p.count FROM lockstore_pins p WHERE p.hash = lockstore_blobs.hash AND p.count > 0), 0)
  + (SELECT COUNT(*) FROM lockstore_blob_parts bp WHERE bp.part_hash = lockstore_blobs.hash);
INSERT INTO lockstore_gc_queue (hash, since_ms) SELECT hash, 0 FROM lockstore_blobs WHERE refs <= 0;
INSERT INTO lockstore_counters (name, value) SELECT 'blobs', COUNT(*) FROM lockstore_blobs;
DROP INDEX lockstore_work_items_dedupe;
CREATE INDEX lockstore_work_items_dedupe ON lockstore_work_items (session_id, dedupe_key)
  WHERE dedupe_key IS NOT NULL;
)sql";

/// Version 5 gives the SessionStore's tables a schema version of their own,
/// in lockstore_schema: from here on `user_version` changes only with the
/// lock tables, so a store-only change never locks out a client that uses
/// only locks (it refuses only a newer `user_version`). The store's tables
/// as versions 2 to 4 left them are store version 1. This step itself bumps
/// `user_version` once, so that no build from before the split runs its
/// store code on a file whose store it cannot read.
inline constexpr const char* schema_v5 = R"sql(
CREATE TABLE lockstore_schema (
  component TEXT PRIMARY KEY NOT NULL,
  version   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO lockstore_schema VALUES ('store', 1);
)sql";

inline constexpr std::array<const char*, 5> migrations = {schema_v1, schema_v2, schema_v3, schema_v4, schema_v5};
/// The lock tables' version (PRAGMA user_version).
inline constexpr int schema_version = static_cast<int>(migrations.size());

/// Store version 2: checkpoint history. Every commit (and fork) adds a row
/// naming its checkpoint, its parent and the caller's metadata; a row
/// references its checkpoint like a head does, and commits keep the last
/// StoreOptions::history rows of a session. The head of every session
/// becomes its first history row. A blob's bytes move to a table of their
/// own: SQLite rewrites a whole row, bytes included, for every update of
/// its reference count, and incremental blob I/O needs the value alone.
/// The migration copies every blob's bytes once.
inline constexpr const char* store_v2 = R"sql(
CREATE TABLE lockstore_blob_bytes (
  id    INTEGER PRIMARY KEY,
  bytes BLOB NOT NULL
);
INSERT INTO lockstore_blob_bytes (id, bytes) SELECT id, bytes FROM lockstore_blobs;
UPDATE lockstore_blobs SET bytes = x'';
CREATE TABLE lockstore_checkpoints (
  session_id      TEXT NOT NULL,
  revision        INTEGER NOT NULL,
  checkpoint_hash TEXT NOT NULL,
  parent_session  TEXT,
  parent_revision INTEGER,
  metadata        BLOB,
  created_ms      INTEGER NOT NULL,
  PRIMARY KEY (session_id, revision)
) WITHOUT ROWID;
CREATE INDEX lockstore_checkpoints_by_hash ON lockstore_checkpoints (checkpoint_hash);
CREATE INDEX lockstore_sessions_by_update ON lockstore_sessions (updated_ms);
CREATE INDEX lockstore_claims_by_session ON lockstore_claims (session_id);
INSERT INTO lockstore_checkpoints (session_id, revision, checkpoint_hash, created_ms)
  SELECT session_id, head_revision, checkpoint_hash, updated_ms FROM lockstore_sessions;
UPDATE lockstore_blobs SET refs = refs + (SELECT COUNT(*) FROM lockstore_sessions s WHERE s.checkpoint_hash = lockstore_blobs.hash)
  WHERE hash IN (SELECT checkpoint_hash FROM lockstore_sessions);
)sql";

/// Store version 3: gc() walks its queue in hash order, the order in which
/// this version stores new blobs (their ids come from their hashes; blobs
/// stored before keep theirs). The queue's index by time goes: keeping it
/// up cost a page write in random order per blob collected. In its place,
/// `gc_next_due_ms` bounds the entries' times from below, so a gc() with
/// nothing due reads one row: the triggers lower it (and
/// `gc_written_min`, the earliest time written during the current pass) for
/// every entry written, whoever writes it, and a pass of gc() that read the
/// whole queue raises it (store_ops.hpp, gc_pass_done). The UPDATE trigger
/// must fire for every update of since_ms: a WHEN clause on it would hide
/// entries from the bound. Processes of an older build must be stopped
/// first: they would go on collecting with a scan of the whole queue per
/// batch.
inline constexpr const char* store_v3 = R"sql(
DROP INDEX IF EXISTS lockstore_gc_queue_by_since;
INSERT INTO lockstore_counters (name, value)
  SELECT 'gc_next_due_ms', COALESCE(MIN(since_ms), 9223372036854775807) FROM lockstore_gc_queue;
INSERT INTO lockstore_counters (name, value) VALUES ('gc_written_min', 9223372036854775807), ('gc_epoch', 0);
CREATE TRIGGER lockstore_gc_queue_inserted AFTER INSERT ON lockstore_gc_queue BEGIN
  UPDATE lockstore_counters SET value = min(value, NEW.since_ms) WHERE name IN ('gc_next_due_ms', 'gc_written_min');
END;
CREATE TRIGGER lockstore_gc_queue_updated AFTER UPDATE OF since_ms ON lockstore_gc_queue BEGIN
  UPDATE lockstore_counters SET value = min(value, NEW.since_ms) WHERE name IN ('gc_next_due_ms', 'gc_written_min');
END;
)sql";

/// store_migrations[i] upgrades the store's tables from version i + 1 to i + 2.
inline constexpr std::array<const char*, 2> store_migrations = {store_v2, store_v3};
inline constexpr int store_schema_version = static_cast<int>(store_migrations.size()) + 1;

/// The store tables' version: 1 in a file from before lockstore_schema.
inline std::int64_t store_schema(SqliteConnection& connection) {
  {
    // Two statements: one naming a table that does not exist fails to prepare.
    auto exists = connection.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'lockstore_schema'");
    if (!exists.step()) return 1;
  }
  auto statement = connection.prepare("SELECT version FROM lockstore_schema WHERE component = 'store'");
  if (!statement.step()) return 1;
  return statement.int64(0);
}

/// PRAGMA application_id of a lockstore file ("LKST"), set by migrate().
inline constexpr std::int64_t application_id = 0x4C4B5354;

/// Refuses, before anything is written to it (not even the switch to WAL),
/// a file that is not lockstore's: another application's mark, or a
/// user_version or tables without lockstore's lease table. A new empty file
/// and a file written by lockstore before the mark pass.
inline void require_lockstore_file(SqliteConnection& connection) {
  const auto mark = connection.pragma_int("application_id");
  if (mark == application_id) return;
  const auto version = connection.pragma_int("user_version");
  std::vector<std::string> tables;
  {
    auto statement = connection.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name");
    while (statement.step()) tables.push_back(statement.text(0));
  }
  const bool has_leases = std::find(tables.begin(), tables.end(), "lockstore_leases") != tables.end();
  const bool empty = tables.empty() && version == 0;
  if (mark == 0 && (empty || has_leases)) return;
  const auto shown = tables.size() > 8 ? std::vector<std::string>(tables.begin(), tables.begin() + 8) : tables;
  throw Error(errc::unsupported_schema,
              fmt::format("'{}' is not a lockstore database, and was left untouched: application_id {:#x}, "
                          "user_version {}, tables: {}{}",
                          connection.path().string(), mark, version, tables.empty() ? "none" : fmt::format("{}", fmt::join(shown, ", ")),
                          tables.size() > shown.size() ? ", ..." : ""));
}

[[noreturn]] inline void throw_unsupported_schema(const SqliteConnection& connection, std::int64_t found) {
  throw Error(errc::unsupported_schema,
              fmt::format("'{}' has lockstore schema version {}; this build supports version {}{}",
                          connection.path().string(), found, schema_version,
                          found > schema_version ? " (the file was written by a newer lockstore)" : ""));
}

/// Brings a writable file to the current schema version, creating it in an
/// empty file. Safe when many processes open the same new file at once: the
/// check is repeated under BEGIN IMMEDIATE.
/// The store's tables are brought up too; a file whose store is newer than
/// this build's is left as it is (its locks still work; SessionStore::open
/// refuses it).
inline void migrate(SqliteConnection& connection) {
  const auto current = [&] {
    return connection.pragma_int("user_version") == schema_version &&
           store_schema(connection) >= store_schema_version;
  };
  if (current()) return;
  Transaction transaction(connection);
  if (current()) return;
  const auto found = connection.pragma_int("user_version");
  if (found < 0 || found > schema_version) throw_unsupported_schema(connection, found);
  for (auto version = found; version < schema_version; ++version)
    connection.exec(migrations[static_cast<std::size_t>(version)]);
  const auto store = store_schema(connection);
  if (store < 1) throw_unsupported_schema(connection, found);
  for (auto version = store; version < store_schema_version; ++version)
    connection.exec(store_migrations[static_cast<std::size_t>(version - 1)]);
  if (store < store_schema_version)
    connection.exec(fmt::format("UPDATE lockstore_schema SET version = {} WHERE component = 'store'",
                                store_schema_version));
  connection.exec(fmt::format("PRAGMA user_version = {}", schema_version));
  connection.exec(fmt::format("PRAGMA application_id = {}", application_id));
  transaction.commit();
}

/// A read-only file must carry lock tables this build can read.
/// Version 4's lock tables are version 5's (5 only added lockstore_schema),
/// so a version 4 file is read as it is; its store reports version 1, which
/// SessionStore::open refuses until the file is opened read-write once.
inline void check_schema(const SqliteConnection& connection, std::int64_t found) {
  if (found != schema_version && found != 4) throw_unsupported_schema(connection, found);
}

/// SessionStore::open's check: the store's tables are at this build's version.
inline void check_store_schema(SqliteConnection& connection) {
  const auto found = store_schema(connection);
  if (found == store_schema_version) return;
  throw Error(errc::unsupported_schema,
              fmt::format("'{}' has lockstore store schema version {}; this build's SessionStore supports version "
                          "{}{}",
                          connection.path().string(), found, store_schema_version,
                          found > store_schema_version ? " (the file was written by a newer lockstore; its locks "
                                                         "still work)"
                                                       : " (open the file read-write once to migrate it)"));
}

/// Switches to WAL. The switch needs an exclusive lock and SQLite does not
/// apply the busy timeout to it in every case, so when many processes open a
/// new file at once it is retried here, with jitter, until `patience` runs out.
inline void enable_wal(SqliteConnection& connection, std::chrono::milliseconds patience) {
  const auto give_up = std::chrono::steady_clock::now() + patience;
  for (;;) {
    std::string mode;
    const int rc = sqlite3_exec(
        connection.handle(), "PRAGMA journal_mode=WAL",
        [](void* out, int, char** values, char**) {
          if (values[0] != nullptr) *static_cast<std::string*>(out) = values[0];
          return 0;
        },
        &mode, nullptr);
    if (rc == SQLITE_OK) {
      if (mode == "wal" || mode == "memory") return;
      throw Error(errc::backend_failure, fmt::format("'{}' could not be switched to WAL mode (journal mode is '{}')",
                                                     connection.path().string(), mode));
    }
    const int primary = rc & 0xff;
    if ((primary != SQLITE_BUSY && primary != SQLITE_LOCKED) || std::chrono::steady_clock::now() >= give_up)
      throw_sqlite(connection.handle(), rc, "switching to WAL mode", connection.path());
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + ThreadRandom::between(0, 9)));
  }
}

}  // namespace lockstore::detail
