// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The SessionStore's operations as plain functions on a SqliteConnection.
// They run on the connection's thread (SessionStore wraps each in one job),
// and each write runs in one BEGIN IMMEDIATE transaction: all or nothing.
#pragma once

#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/manifest.hpp"
#include "lockstore/detail/sha256.hpp"
#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_fenced.hpp"
#include "lockstore/lock_guard.hpp"
#include "lockstore/store_types.hpp"

#include <algorithm>
#include <limits>
#include <charconv>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lockstore::detail::store {

namespace sql {

inline constexpr const char* head =
    "SELECT head_revision, checkpoint_hash, updated_ms FROM lockstore_sessions WHERE session_id = ?1";
inline constexpr const char* set_head = R"sql(
INSERT INTO lockstore_sessions (session_id, head_revision, checkpoint_hash, updated_ms) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (session_id) DO UPDATE SET
  head_revision = excluded.head_revision, checkpoint_hash = excluded.checkpoint_hash, updated_ms = excluded.updated_ms)sql";
inline constexpr const char* sessions = R"sql(
SELECT session_id, head_revision, checkpoint_hash, updated_ms FROM lockstore_sessions
WHERE session_id > ?1 ORDER BY session_id LIMIT ?2)sql";
inline constexpr const char* add_history = R"sql(
INSERT INTO lockstore_checkpoints (session_id, revision, checkpoint_hash, parent_session, parent_revision, metadata,
                                   created_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7))sql";
inline constexpr const char* trim_history =
    "DELETE FROM lockstore_checkpoints WHERE session_id = ?1 AND revision <= ?2 RETURNING checkpoint_hash";
inline constexpr const char* history = R"sql(
SELECT revision, checkpoint_hash, parent_session, parent_revision, metadata, created_ms FROM lockstore_checkpoints
WHERE session_id = ?1 AND revision < ?2 ORDER BY revision DESC LIMIT ?3)sql";
inline constexpr const char* revision =
    "SELECT checkpoint_hash, created_ms FROM lockstore_checkpoints WHERE session_id = ?1 AND revision = ?2";
inline constexpr const char* delete_head = "DELETE FROM lockstore_sessions WHERE session_id = ?1 RETURNING checkpoint_hash";
inline constexpr const char* delete_history =
    "DELETE FROM lockstore_checkpoints WHERE session_id = ?1 RETURNING checkpoint_hash";
inline constexpr const char* delete_nodes = "DELETE FROM lockstore_graph_nodes WHERE session_id = ?1";
inline constexpr const char* delete_items = "DELETE FROM lockstore_work_items WHERE session_id = ?1";
inline constexpr const char* delete_claims = "DELETE FROM lockstore_claims WHERE session_id = ?1";
// A session with a live claim is being worked on, whenever it last committed.
inline constexpr const char* idle_sessions = R"sql(
SELECT session_id FROM lockstore_sessions s WHERE updated_ms < ?1
  AND NOT EXISTS (SELECT 1 FROM lockstore_claims c WHERE c.session_id = s.session_id AND c.expires_ms > ?3)
ORDER BY updated_ms LIMIT ?2)sql";

// The bytes have a table of their own (an update of `refs` rewrites a whole
// row) and go in afterwards through incremental blob I/O (write_blob). A
// blob's id is the top 60 bits of its hash (?3, see hash_ordered_id), so
// its row, its bytes, its hash index entry and its GC queue entry all sort
// alike: gc(), walking the queue by hash, deletes neighbours that share
// pages instead of one random page per blob and table. When another row
// has that id already, SQLite picks one (NULL).
inline constexpr const char* put_blob = R"sql(
INSERT INTO lockstore_blobs (id, hash, size, bytes)
VALUES ((SELECT ?3 WHERE NOT EXISTS (SELECT 1 FROM lockstore_blobs WHERE id = ?3)
                     AND NOT EXISTS (SELECT 1 FROM lockstore_blob_bytes WHERE id = ?3)), ?1, ?2, x'')
ON CONFLICT (hash) DO NOTHING RETURNING id)sql";
inline constexpr const char* put_bytes = "INSERT INTO lockstore_blob_bytes (id, bytes) VALUES (?1, zeroblob(?2))";
inline constexpr const char* count_blobs = "UPDATE lockstore_counters SET value = value + ?1 WHERE name = 'blobs'";
// An unreferenced blob waits in the GC queue from (again) now: stored again,
// it is wanted again.
inline constexpr const char* queue_if_unreferenced = R"sql(
INSERT INTO lockstore_gc_queue (hash, since_ms) SELECT hash, ?2 FROM lockstore_blobs WHERE hash = ?1 AND refs <= 0
ON CONFLICT (hash) DO UPDATE SET since_ms = max(since_ms, excluded.since_ms))sql";
inline constexpr const char* add_ref = "UPDATE lockstore_blobs SET refs = refs + 1 WHERE hash = ?1";
inline constexpr const char* drop_ref = R"sql(
UPDATE lockstore_blobs SET refs = refs - 1, touched_ms = max(touched_ms, ?2) WHERE hash = ?1
RETURNING refs, touched_ms)sql";
inline constexpr const char* touch = "UPDATE lockstore_blobs SET touched_ms = max(touched_ms, ?2) WHERE hash = ?1";
// What really references a blob, whatever its count says: checked before a
// blob is deleted, so a count that drifted (a file written meanwhile by a
// lockstore that did not count) never deletes a needed blob.
inline constexpr const char* referenced = R"sql(
SELECT EXISTS (SELECT 1 FROM lockstore_sessions WHERE checkpoint_hash = ?1)
    OR EXISTS (SELECT 1 FROM lockstore_pins WHERE hash = ?1 AND count > 0)
    OR EXISTS (SELECT 1 FROM lockstore_blob_parts WHERE part_hash = ?1)
    OR EXISTS (SELECT 1 FROM lockstore_checkpoints WHERE checkpoint_hash = ?1))sql";
inline constexpr const char* recount = R"sql(
UPDATE lockstore_blobs SET refs =
    (SELECT COUNT(*) FROM lockstore_sessions WHERE checkpoint_hash = ?1)
  + COALESCE((SELECT count FROM lockstore_pins WHERE hash = ?1 AND count > 0), 0)
  + (SELECT COUNT(*) FROM lockstore_blob_parts WHERE part_hash = ?1)
  + (SELECT COUNT(*) FROM lockstore_checkpoints WHERE checkpoint_hash = ?1)
WHERE hash = ?1)sql";
inline constexpr const char* queue_blob = R"sql(
INSERT INTO lockstore_gc_queue (hash, since_ms) VALUES (?1, ?2)
ON CONFLICT (hash) DO UPDATE SET since_ms = max(since_ms, excluded.since_ms))sql";
inline constexpr const char* get_blob = "SELECT id FROM lockstore_blobs WHERE hash = ?1";
inline constexpr const char* blob_exists = "SELECT 1 FROM lockstore_blobs WHERE hash = ?1";
inline constexpr const char* add_part =
    "INSERT OR IGNORE INTO lockstore_blob_parts (manifest_hash, part_hash) VALUES (?1, ?2)";
inline constexpr const char* pin = R"sql(
INSERT INTO lockstore_pins (hash, count) VALUES (?1, 1) ON CONFLICT (hash) DO UPDATE SET count = count + 1)sql";
inline constexpr const char* unpin = "UPDATE lockstore_pins SET count = count - 1 WHERE hash = ?1 AND count > 0";
inline constexpr const char* drop_unpinned = "DELETE FROM lockstore_pins WHERE hash = ?1 AND count <= 0";

// The queue in hash order from a cursor, the order of the tables the
// deletions touch (see put_blob); due or not, so that a batch reads a
// bounded number of entries.
inline constexpr const char* gc_scan =
    "SELECT hash, since_ms FROM lockstore_gc_queue WHERE hash > ?1 ORDER BY hash LIMIT ?2";
inline constexpr const char* gc_since = "SELECT since_ms FROM lockstore_gc_queue WHERE hash = ?1";
// gc_next_due_ms: a lower bound on the since_ms of every queue entry (the
// triggers lower it for every entry written; a pass of gc() that saw them
// all raises it). gc_written_min: the earliest since_ms written since the
// current pass began. gc_epoch: which pass began last.
inline constexpr const char* gc_next_due = "SELECT value FROM lockstore_counters WHERE name = 'gc_next_due_ms'";
inline constexpr const char* gc_begin_pass = R"sql(
UPDATE lockstore_counters SET value = CASE name WHEN 'gc_epoch' THEN value + 1 ELSE 9223372036854775807 END
WHERE name IN ('gc_epoch', 'gc_written_min'))sql";
inline constexpr const char* gc_epoch = "SELECT value FROM lockstore_counters WHERE name = 'gc_epoch'";
inline constexpr const char* gc_raise_next_due = R"sql(
UPDATE lockstore_counters SET value =
  CASE WHEN (SELECT value FROM lockstore_counters WHERE name = 'gc_epoch') = ?1
       THEN min(?2, (SELECT value FROM lockstore_counters WHERE name = 'gc_written_min'))
       ELSE min(value, ?2) END
WHERE name = 'gc_next_due_ms')sql";
inline constexpr const char* gc_unqueue = "DELETE FROM lockstore_gc_queue WHERE hash = ?1";
inline constexpr const char* gc_refs = "SELECT refs FROM lockstore_blobs WHERE hash = ?1";
inline constexpr const char* gc_parts = "SELECT part_hash FROM lockstore_blob_parts WHERE manifest_hash = ?1";
inline constexpr const char* gc_drop_parts = "DELETE FROM lockstore_blob_parts WHERE manifest_hash = ?1";
inline constexpr const char* gc_delete_bytes =
    "DELETE FROM lockstore_blob_bytes WHERE id = (SELECT id FROM lockstore_blobs WHERE hash = ?1)";
inline constexpr const char* gc_delete = "DELETE FROM lockstore_blobs WHERE hash = ?1";
// Every head has its row in the history: the history rows and the pins.
inline constexpr const char* gc_roots = R"sql(
SELECT (SELECT COUNT(*) FROM lockstore_checkpoints) + (SELECT COUNT(*) FROM lockstore_pins WHERE count > 0),
       (SELECT value FROM lockstore_counters WHERE name = 'blobs'))sql";

// What gc() would delete at `?1` (the cutoff): the queued blobs due and
// unreferenced, and the parts that only due manifests name (gc() queues
// those from the manifest's own time, so they go in the same pass).
inline constexpr const char* gc_would_delete = R"sql(
WITH due AS (
  SELECT q.hash FROM lockstore_gc_queue q JOIN lockstore_blobs b ON b.hash = q.hash
  WHERE q.since_ms <= ?1 AND b.refs <= 0),
freed AS (
  SELECT bp.part_hash AS hash FROM lockstore_blob_parts bp JOIN due d ON bp.manifest_hash = d.hash
  GROUP BY bp.part_hash
  HAVING COUNT(*) >= (SELECT b.refs FROM lockstore_blobs b WHERE b.hash = bp.part_hash))
SELECT (SELECT COUNT(*) FROM due) + (SELECT COUNT(*) FROM freed WHERE hash NOT IN (SELECT hash FROM due)))sql";

// Only an item no claim holds absorbs new work: one being processed may
// complete without seeing it.
inline constexpr const char* find_dedupe = R"sql(
SELECT id, payload, attempts FROM lockstore_work_items
WHERE session_id = ?1 AND dedupe_key = ?2 AND claim_token IS NULL ORDER BY id LIMIT 1)sql";
inline constexpr const char* enqueue = R"sql(
INSERT INTO lockstore_work_items (session_id, payload, dedupe_key, not_before_ms) VALUES (?1, ?2, ?3, ?4)
RETURNING id)sql";
inline constexpr const char* next_fence =
    "UPDATE lockstore_counters SET value = value + 1 WHERE name = 'claim_fence' RETURNING value";
inline constexpr const char* take_ready = R"sql(
UPDATE lockstore_work_items SET claim_token = ?3, claim_expires_ms = ?4, attempts = attempts + 1
WHERE id IN (SELECT id FROM lockstore_work_items
             WHERE session_id = ?1 AND not_before_ms <= ?2 AND (claim_token IS NULL OR claim_expires_ms <= ?2)
             ORDER BY id LIMIT ?5)
RETURNING id, payload, dedupe_key, attempts)sql";
inline constexpr const char* add_claim =
    "INSERT INTO lockstore_claims (token, session_id, owner, fence, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
inline constexpr const char* held_by_claim = "SELECT COUNT(*) FROM lockstore_work_items WHERE claim_token = ?1";
inline constexpr const char* renew_items =
    "UPDATE lockstore_work_items SET claim_expires_ms = ?2 WHERE claim_token = ?1";
inline constexpr const char* renew_claim = "UPDATE lockstore_claims SET expires_ms = ?2 WHERE token = ?1";
inline constexpr const char* complete_items = "DELETE FROM lockstore_work_items WHERE claim_token = ?1";
inline constexpr const char* abandon_items =
    "UPDATE lockstore_work_items SET claim_token = NULL, claim_expires_ms = 0 WHERE claim_token = ?1";
inline constexpr const char* drop_claim = "DELETE FROM lockstore_claims WHERE token = ?1";
// An abandoned item whose dedupe key was enqueued again while it was claimed
// folds into that newer, unclaimed item instead of becoming a second one.
inline constexpr const char* abandon_duplicates = R"sql(
DELETE FROM lockstore_work_items WHERE claim_token = ?1 AND dedupe_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM lockstore_work_items o WHERE o.session_id = lockstore_work_items.session_id
              AND o.dedupe_key = lockstore_work_items.dedupe_key AND o.claim_token IS NULL))sql";
inline constexpr const char* drop_expired_claims = R"sql(
DELETE FROM lockstore_claims WHERE expires_ms <= ?1
  AND NOT EXISTS (SELECT 1 FROM lockstore_work_items w WHERE w.claim_token = lockstore_claims.token))sql";
inline constexpr const char* pending = R"sql(
SELECT id, payload, dedupe_key, attempts FROM lockstore_work_items WHERE session_id = ?1 AND id > ?2
ORDER BY id LIMIT ?3)sql";

inline constexpr const char* node_exists =
    "SELECT 1 FROM lockstore_graph_nodes WHERE session_id = ?1 AND node_id = ?2";
inline constexpr const char* named_as_parent =
    "SELECT 1 FROM lockstore_graph_nodes WHERE session_id = ?1 AND parent_id = ?2 LIMIT 1";
inline constexpr const char* add_node =
    "INSERT INTO lockstore_graph_nodes (session_id, node_id, parent_id, payload) VALUES (?1, ?2, ?3, ?4)";
inline constexpr const char* graph = R"sql(
SELECT node_id, parent_id, payload, seq FROM lockstore_graph_nodes
WHERE session_id = ?1 AND tombstoned = 0 AND seq > ?2 ORDER BY seq LIMIT ?3)sql";
// Walks from the leaf to the root through the (session_id, node_id) unique
// index; tombstoned nodes are walked through (the caller drops them). No
// path is longer than the session has nodes, so the walk stops there even
// in a file whose parent links form a cycle (the caller reports it).
inline constexpr const char* active_path = R"sql(
WITH RECURSIVE path (node_id, parent_id, payload, tombstoned, depth) AS (
  SELECT node_id, parent_id, payload, tombstoned, 0 FROM lockstore_graph_nodes
  WHERE session_id = ?1 AND node_id = ?2
  UNION ALL
  SELECT n.node_id, n.parent_id, n.payload, n.tombstoned, path.depth + 1
  FROM lockstore_graph_nodes n JOIN path ON n.session_id = ?1 AND n.node_id = path.parent_id
  WHERE path.depth < (SELECT COUNT(*) FROM lockstore_graph_nodes WHERE session_id = ?1)
)
SELECT node_id, parent_id, payload, tombstoned FROM path ORDER BY depth DESC)sql";
inline constexpr const char* tombstone = R"sql(
UPDATE lockstore_graph_nodes SET tombstoned = 1 WHERE session_id = ?1 AND node_id = ?2 AND tombstoned = 0)sql";
// Deletes the tombstoned nodes that are no live node's ancestor: whole
// tombstoned subtrees. A tombstoned node on a live node's path stays (walked
// through, never returned), so no remaining node names a deleted parent.
inline constexpr const char* vacuum = R"sql(
WITH RECURSIVE needed (session_id, node_id) AS (
  SELECT session_id, parent_id FROM lockstore_graph_nodes WHERE tombstoned = 0 AND parent_id IS NOT NULL
  UNION
  SELECT n.session_id, n.parent_id FROM lockstore_graph_nodes n
  JOIN needed ON n.session_id = needed.session_id AND n.node_id = needed.node_id
  WHERE n.parent_id IS NOT NULL
)
DELETE FROM lockstore_graph_nodes WHERE tombstoned = 1
  AND NOT EXISTS (SELECT 1 FROM needed WHERE needed.session_id = lockstore_graph_nodes.session_id
                                         AND needed.node_id = lockstore_graph_nodes.node_id))sql";

inline constexpr const char* stats = R"sql(
SELECT (SELECT COUNT(*) FROM lockstore_sessions), (SELECT COUNT(*) FROM lockstore_blobs),
       (SELECT COUNT(*) FROM lockstore_work_items), (SELECT COALESCE(SUM(size), 0) FROM lockstore_blobs))sql";

}  // namespace sql

inline void require_id(std::string_view what, std::string_view id) {
  if (id.empty() || id.size() > 512 || id.find('\0') != std::string_view::npos)
    throw Error(errc::invalid_argument,
                fmt::format("{} must be 1 to 512 bytes without NUL, got {} bytes", what, id.size()));
}

inline void require_ref(const BlobRef& ref) {
  if (!is_sha256_hex(ref.hash))
    throw Error(errc::invalid_argument,
                fmt::format("'{:.80}' is not a blob ref (64 lower-case hex digits of SHA-256)", ref.hash));
}

inline std::int64_t epoch_ms(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

inline std::chrono::system_clock::time_point from_epoch_ms(std::int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

/// Entries a listing returns at most per page.
inline constexpr std::size_t max_page = 10'000;

inline void require_page(const PageRequest& page, std::string_view operation) {
  if (page.limit == 0 || page.limit > max_page)
    throw Error(errc::invalid_argument,
                fmt::format("{}: PageRequest::limit must be 1 to {}, got {}", operation, max_page, page.limit));
}

/// A numeric cursor (a position after which a listing goes on); `none` for
/// an empty one.
inline std::int64_t numeric_cursor(const PageRequest& page, std::string_view operation, std::int64_t none) {
  if (page.cursor.empty()) return none;
  std::int64_t value = 0;
  const auto* end = page.cursor.data() + page.cursor.size();
  const auto [stop, failure] = std::from_chars(page.cursor.data(), end, value);
  if (failure != std::errc{} || stop != end || value < 0)
    throw Error(errc::invalid_argument,
                fmt::format("{}: '{:.40}' is not a cursor this listing returned", operation, page.cursor));
  return value;
}

/// The SHA-256 of every part and of the manifest naming them: computed
/// before the write transaction, so the file's write lock is not held while
/// large parts are hashed.
struct HashedCheckpoint {
  Checkpoint checkpoint;
  std::string manifest;
  BlobRef manifest_ref;
};

inline HashedCheckpoint hash_checkpoint(const std::map<std::string, std::string>& parts) {
  HashedCheckpoint hashed;
  for (const auto& [name, bytes] : parts) {
    if (name.empty()) throw Error(errc::invalid_argument, "checkpoint part names must not be empty");
    hashed.checkpoint.parts.emplace(name, BlobRef{sha256_hex(bytes)});
  }
  hashed.manifest = encode_manifest(hashed.checkpoint);
  hashed.manifest_ref = BlobRef{sha256_hex(hashed.manifest)};
  return hashed;
}

// --- blobs ------------------------------------------------------------------

// Reference counting. A blob's `refs` counts the session heads naming it,
// its pins and the manifests naming it as a part; at 0 it enters the GC
// queue, and gc() deletes it once it has waited there the grace period.

inline void add_ref(SqliteConnection& connection, const std::string& hash) {
  connection.prepare(sql::add_ref).bind(1, hash).run();
}

/// The id a new blob asks for: the hash's first 15 hex digits (60 bits), so
/// ids sort as hashes do. Two hashes that share them (among a million
/// blobs, odds of about 1 in 2 million) only cost the second an id of
/// SQLite's choosing.
inline std::int64_t hash_ordered_id(std::string_view hash) {
  std::uint64_t id = 0;
  const auto digits = hash.substr(0, std::min<std::size_t>(hash.size(), 15));
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), id, 16);
  if (error != std::errc{} || end != digits.data() + digits.size()) return 0;
  return static_cast<std::int64_t>(id);
}


/// One reference fewer, as of `since_ms`. At none, the blob is queued from
/// the latest of that time and the last time it was stored or lost a
/// reference: its grace period counts from its own last use, not only from
/// when what referenced it went (a manifest's part may have been put again,
/// or unpinned, long after that manifest was superseded).
inline void drop_ref(SqliteConnection& connection, const std::string& hash, std::int64_t since_ms) {
  std::optional<std::int64_t> queue_since;
  {
    auto statement = connection.prepare(sql::drop_ref);
    statement.bind(1, hash).bind(2, since_ms);
    if (statement.step() && statement.int64(0) <= 0) queue_since = statement.int64(1);
  }
  if (queue_since) connection.prepare(sql::queue_blob).bind(1, hash).bind(2, *queue_since).run();
}

/// Stores the bytes, whose SHA-256 is `ref`, unless present; SQLite keeps
/// no second copy of them (incremental blob I/O). `referenced`: the caller
/// references the blob in the same transaction (a commit's parts and
/// manifest); otherwise it waits in the GC queue, from now, until something
/// references it.
inline BlobRef put_blob(SqliteConnection& connection, const BlobRef& ref, std::string_view bytes,
                        bool referenced = false) {
  std::optional<std::int64_t> inserted;
  {
    auto statement = connection.prepare(sql::put_blob);
    statement.bind(1, ref.hash).bind(2, static_cast<std::int64_t>(bytes.size())).bind(3, hash_ordered_id(ref.hash));
    if (statement.step()) inserted = statement.int64(0);
  }
  if (inserted) {
    connection.prepare(sql::put_bytes).bind(1, *inserted).bind(2, static_cast<std::int64_t>(bytes.size())).run();
    connection.write_blob("lockstore_blob_bytes", "bytes", *inserted, bytes);
    connection.prepare(sql::count_blobs).bind(1, std::int64_t{1}).run();
  }
  if (!referenced) {
    const auto now = wall_clock_ms();
    connection.prepare(sql::touch).bind(1, ref.hash).bind(2, now).run();
    connection.prepare(sql::queue_if_unreferenced).bind(1, ref.hash).bind(2, now).run();
  }
  return ref;
}

/// As above, hashing the bytes here (inside the caller's transaction, if any).
inline BlobRef put_blob(SqliteConnection& connection, std::string_view bytes, bool referenced = false) {
  return put_blob(connection, BlobRef{sha256_hex(bytes)}, bytes, referenced);
}

/// The bytes of a blob, checked against its hash (errc::corrupt_data if they
/// no longer match), or std::nullopt if there is no such blob. It finds the
/// row, then reads its bytes through a blob handle: call it inside a
/// transaction, so both see one snapshot.
inline std::optional<std::string> get_blob(SqliteConnection& connection, const BlobRef& ref) {
  std::int64_t id = 0;
  {
    auto statement = connection.prepare(sql::get_blob);
    statement.bind(1, ref.hash);
    if (!statement.step()) return std::nullopt;
    id = statement.int64(0);
  }
  auto bytes = connection.read_blob("lockstore_blob_bytes", "bytes", id);
  if (sha256_hex(bytes) != ref.hash)
    throw Error(errc::corrupt_data, fmt::format("blob {} in '{}' does not match its hash", ref.hash,
                                                connection.path().string()));
  return bytes;
}

inline bool blob_exists(SqliteConnection& connection, const std::string& hash) {
  auto statement = connection.prepare(sql::blob_exists);
  statement.bind(1, hash);
  return statement.step();
}

/// Stores the parts and the manifest naming them; returns the manifest's ref.
inline BlobRef put_checkpoint(SqliteConnection& connection, const std::map<std::string, std::string>& parts,
                              const HashedCheckpoint& hashed) {
  for (const auto& [name, bytes] : parts) put_blob(connection, hashed.checkpoint.parts.at(name), bytes, true);
  const auto manifest = put_blob(connection, hashed.manifest_ref, hashed.manifest, true);
  // A manifest stored before already counts for its parts.
  for (const auto& [name, part] : hashed.checkpoint.parts)
    if (connection.prepare(sql::add_part).bind(1, manifest.hash).bind(2, part.hash).run() == 1)
      add_ref(connection, part.hash);
  return manifest;
}

/// No queue entry is due before this (std::int64_t max: the queue is empty).
inline std::int64_t gc_next_due(SqliteConnection& connection) {
  auto statement = connection.prepare(sql::gc_next_due);
  statement.step();
  return statement.int64(0);
}

/// Starts a pass of gc() over the whole queue; returns its epoch.
inline std::int64_t gc_begin_pass(SqliteConnection& connection) {
  Transaction transaction(connection);
  connection.prepare(sql::gc_begin_pass).run();
  auto statement = connection.prepare(sql::gc_epoch);
  statement.step();
  const auto epoch = statement.int64(0);
  transaction.commit();
  return epoch;
}

/// After the pass `epoch` read the whole queue: no entry it saw and left is
/// due before `next_due_ms`, and no entry written since it began (by
/// anyone, its own parts included) before gc_written_min, so the bound
/// becomes the earlier of the two. If another pass began meanwhile, it
/// reset gc_written_min: the bound is then only lowered. (A pass that
/// deleted a manifest wrote its parts' entries itself, and leaves the bound
/// at or before their time, even if it deleted them too: the next pass,
/// finding nothing more to write, raises it.)
inline void gc_pass_done(SqliteConnection& connection, std::int64_t epoch, std::int64_t next_due_ms) {
  Transaction transaction(connection);
  connection.prepare(sql::gc_raise_next_due).bind(1, epoch).bind(2, next_due_ms).run();
  transaction.commit();
}

/// What one gc_batch() did.
struct GcBatch {
  std::size_t deleted = 0;
  std::string last;  // the cursor for the next batch: the last hash dealt with
  bool more = false; // entries may be left after `last`
  bool wrote = false;  // took the write lock
  /// The earliest since_ms among the entries the batch left in the queue.
  std::int64_t next_due_ms = std::numeric_limits<std::int64_t>::max();
};

namespace gc_detail {

/// Deletes `hash` if its queue entry is still due and nothing references
/// it; the parts of a deleted manifest lose a reference and join `work`.
/// An entry left in the queue lowers `batch.next_due_ms`.
inline void collect(SqliteConnection& connection, const std::string& hash, std::int64_t cutoff_ms,
                    std::vector<std::string>& work, GcBatch& batch) {
  std::optional<std::int64_t> since_ms;
  {
    auto statement = connection.prepare(sql::gc_since);
    statement.bind(1, hash);
    if (statement.step()) since_ms = statement.int64(0);
  }
  if (!since_ms) return;  // not queued: collected, or referenced again
  if (*since_ms > cutoff_ms) {  // used again since it was read, or a part put again lately
    batch.next_due_ms = std::min(batch.next_due_ms, *since_ms);
    return;
  }
  connection.prepare(sql::gc_unqueue).bind(1, hash).run();
  std::optional<std::int64_t> refs;
  {
    auto statement = connection.prepare(sql::gc_refs);
    statement.bind(1, hash);
    if (statement.step()) refs = statement.int64(0);
  }
  if (!refs || *refs > 0) return;  // gone already, or referenced again
  {
    auto statement = connection.prepare(sql::referenced);
    statement.bind(1, hash);
    if (statement.step() && statement.int64(0) != 0) {
      // The count drifted: trust what references it, and keep it.
      connection.prepare(sql::recount).bind(1, hash).run();
      return;
    }
  }
  std::vector<std::string> parts;
  {
    auto statement = connection.prepare(sql::gc_parts);
    statement.bind(1, hash);
    while (statement.step()) parts.push_back(statement.text(0));
  }
  connection.prepare(sql::gc_drop_parts).bind(1, hash).run();
  // The parts were unreferenced (by this manifest) as long as it was: those
  // left without a reference are queued from then (or from their own last
  // use, if later), and collected in this batch if that makes them due.
  for (auto& part : parts) {
    drop_ref(connection, part, *since_ms);
    work.push_back(std::move(part));
  }
  connection.prepare(sql::gc_delete_bytes).bind(1, hash).run();
  batch.deleted += static_cast<std::size_t>(connection.prepare(sql::gc_delete).bind(1, hash).run());
}

}  // namespace gc_detail

/// One batch of garbage collection: reads the queue's next `max_blobs`
/// entries after `after`, in hash order, then in one write transaction
/// deletes those of them still due (unreferenced since `cutoff_ms` or
/// earlier) and unreferenced, with the parts of a deleted manifest that
/// this leaves due. Stops after `budget`, so the write lock is held
/// briefly. Reads no blob's bytes. Walking in hash order, consecutive
/// deletions of blobs stored by this version share their pages (see
/// put_blob); the parts of a manifest are looked up where they are.
inline GcBatch gc_batch(SqliteConnection& connection, std::int64_t cutoff_ms, const std::string& after,
                        std::size_t max_blobs, std::chrono::microseconds budget) {
  GcBatch batch;
  batch.last = after;
  std::vector<std::string> due;
  std::size_t read = 0;
  {
    auto statement = connection.prepare(sql::gc_scan);
    statement.bind(1, after).bind(2, static_cast<std::int64_t>(max_blobs));
    while (statement.step()) {
      ++read;
      batch.last = statement.text(0);
      const auto since_ms = statement.int64(1);
      if (since_ms <= cutoff_ms)
        due.push_back(batch.last);
      else
        batch.next_due_ms = std::min(batch.next_due_ms, since_ms);
    }
  }
  batch.more = read == max_blobs;
  if (due.empty()) return batch;
  batch.wrote = true;
  const auto started = std::chrono::steady_clock::now();
  Transaction transaction(connection);
  std::vector<std::string> work;
  for (const auto& hash : due) {
    gc_detail::collect(connection, hash, cutoff_ms, work, batch);
    while (!work.empty()) {
      const auto part = std::move(work.back());
      work.pop_back();
      gc_detail::collect(connection, part, cutoff_ms, work, batch);
    }
    if (std::chrono::steady_clock::now() - started >= budget && hash != due.back()) {
      batch.last = hash;  // the next batch reads on from here
      batch.more = true;
      break;
    }
  }
  if (batch.deleted > 0)
    connection.prepare(sql::count_blobs).bind(1, -static_cast<std::int64_t>(batch.deleted)).run();
  transaction.commit();
  return batch;
}

/// The report's counts after a collection: heads + pins, and blobs left.
inline GcReport gc_report(SqliteConnection& connection, std::size_t deleted) {
  auto statement = connection.prepare(sql::gc_roots);
  statement.step();
  return GcReport{static_cast<std::size_t>(statement.int64(0)), static_cast<std::size_t>(statement.int64(1)), deleted};
}

/// What gc() would report at `cutoff_ms`, deleting nothing (one read).
inline GcReport gc_preview(SqliteConnection& connection, std::int64_t cutoff_ms) {
  auto snapshot = Transaction::read(connection);
  auto statement = connection.prepare(sql::gc_would_delete);
  statement.bind(1, cutoff_ms);
  statement.step();
  const auto deleted = static_cast<std::size_t>(statement.int64(0));
  auto report = gc_report(connection, deleted);
  report.retained_blob_count -= std::min(report.retained_blob_count, deleted);
  return report;
}

/// The parts of checkpoint `ref` (revision `revision` of the session), read
/// in the caller's read transaction; errc::corrupt_data when the checkpoint
/// or a part is missing or does not match its hash.
inline std::map<std::string, std::string> read_parts(SqliteConnection& connection, const std::string& session_id,
                                                     std::uint64_t revision, const BlobRef& ref) {
  const auto missing = [&](std::string_view what, const BlobRef& missing_ref) {
    return Error(errc::corrupt_data, fmt::format("session '{}' revision {} in '{}': {} {} is missing", session_id,
                                                 revision, connection.path().string(), what, missing_ref.hash));
  };
  auto manifest = get_blob(connection, ref);
  if (!manifest) throw missing("its checkpoint", ref);
  std::map<std::string, std::string> parts;
  for (auto& [name, part] : decode_manifest(*manifest).parts) {
    auto bytes = get_blob(connection, part);
    if (!bytes) throw missing(fmt::format("part '{}'", name), part);
    parts.emplace(name, std::move(*bytes));
  }
  return parts;
}

inline SessionHead read_head(const Statement& row, std::string session_id, int first_column = 0) {
  return SessionHead{std::move(session_id), static_cast<std::uint64_t>(row.int64(first_column)),
                     BlobRef{row.text(first_column + 1)}, from_epoch_ms(row.int64(first_column + 2))};
}

/// The session's head and its checkpoint's parts, read in one read
/// transaction, so all of it comes from one snapshot of the file whatever
/// other connections commit or collect meanwhile. std::nullopt for an
/// unknown session.
inline std::optional<SessionSnapshot> load_snapshot(SqliteConnection& connection, const std::string& session_id) {
  auto transaction = Transaction::read(connection);
  SessionSnapshot snapshot;
  {
    auto head = connection.prepare(sql::head);
    head.bind(1, session_id);
    if (!head.step()) return std::nullopt;
    snapshot.head = read_head(head, session_id);
  }
  snapshot.parts = read_parts(connection, session_id, snapshot.head.head_revision, snapshot.head.checkpoint_ref);
  transaction.commit();
  return snapshot;
}

/// Revision `revision` of the session from its history, as load_snapshot
/// reads the head (head.updated_at: when that revision was committed).
/// std::nullopt when the history does not hold it.
inline std::optional<SessionSnapshot> load_revision(SqliteConnection& connection, const std::string& session_id,
                                                    std::uint64_t revision) {
  auto transaction = Transaction::read(connection);
  SessionSnapshot snapshot;
  {
    auto row = connection.prepare(sql::revision);
    row.bind(1, session_id).bind(2, static_cast<std::int64_t>(revision));
    if (!row.step()) return std::nullopt;
    snapshot.head = SessionHead{session_id, revision, BlobRef{row.text(0)}, from_epoch_ms(row.int64(1))};
  }
  snapshot.parts = read_parts(connection, session_id, revision, snapshot.head.checkpoint_ref);
  transaction.commit();
  return snapshot;
}

/// Up to `limit` entries from a statement that asked for limit + 1 rows:
/// `entry` makes one of the current row, `position` its cursor. A row past
/// the limit means another page, which starts after the last entry returned.
template <class T, class Entry, class Position>
Page<T> read_page(Statement& statement, std::size_t limit, Entry entry, Position position) {
  Page<T> result;
  std::string last;
  while (statement.step()) {
    if (result.items.size() == limit) {
      result.next = std::move(last);
      break;
    }
    last = position(statement);
    result.items.push_back(entry(statement));
  }
  return result;
}

/// A page of the session's history, newest first.
inline Page<CheckpointInfo> history(SqliteConnection& connection, const std::string& session_id,
                                    const PageRequest& page) {
  const auto before = numeric_cursor(page, "SessionStore::history", std::numeric_limits<std::int64_t>::max());
  auto statement = connection.prepare(sql::history);
  statement.bind(1, session_id).bind(2, before).bind(3, static_cast<std::int64_t>(page.limit) + 1);
  return read_page<CheckpointInfo>(
      statement, page.limit,
      [&](const Statement& row) {
        return CheckpointInfo{session_id, static_cast<std::uint64_t>(row.int64(0)), BlobRef{row.text(1)},
                              row.is_null(3) ? std::nullopt : std::optional<std::uint64_t>(row.int64(3)),
                              row.is_null(2) ? session_id : row.text(2),
                              row.is_null(4) ? std::nullopt : std::optional<std::string>(row.blob(4)),
                              from_epoch_ms(row.int64(5))};
      },
      [](const Statement& row) { return std::to_string(row.int64(0)); });
}

/// Every page of a listing, read in one read transaction.
template <class ReadPage>
auto all_pages(SqliteConnection& connection, ReadPage read_page) {
  auto transaction = Transaction::read(connection);
  PageRequest page{max_page, {}};
  auto first = read_page(page);
  auto result = std::move(first.items);
  for (auto next = std::move(first.next); next;) {
    page.cursor = *next;
    auto more = read_page(page);
    std::move(more.items.begin(), more.items.end(), std::back_inserter(result));
    next = std::move(more.next);
  }
  transaction.commit();
  return result;
}

/// A page of every session's head, by session id.
inline Page<SessionHead> sessions(SqliteConnection& connection, const PageRequest& page) {
  auto statement = connection.prepare(sql::sessions);
  statement.bind(1, page.cursor).bind(2, static_cast<std::int64_t>(page.limit) + 1);
  return read_page<SessionHead>(
      statement, page.limit, [](const Statement& row) { return read_head(row, row.text(0), 1); },
      [](const Statement& row) { return row.text(0); });
}

// --- work queue ---------------------------------------------------------------

inline WorkItem read_item(const Statement& row, const std::string& session_id) {
  return WorkItem{row.int64(0), session_id, row.blob(1),
                  row.is_null(2) ? std::nullopt : std::optional<std::string>(row.text(2)),
                  static_cast<std::uint32_t>(row.int64(3))};
}

inline WorkItem enqueue(SqliteConnection& connection, const std::string& session_id, const WorkDraft& draft) {
  if (draft.dedupe_key) {
    require_id("dedupe key", *draft.dedupe_key);
    auto existing = connection.prepare(sql::find_dedupe);
    existing.bind(1, session_id).bind(2, *draft.dedupe_key);
    if (existing.step())
      return WorkItem{existing.int64(0), session_id, existing.blob(1), draft.dedupe_key,
                      static_cast<std::uint32_t>(existing.int64(2))};
  }
  auto statement = connection.prepare(sql::enqueue);
  statement.bind(1, session_id).bind_blob(2, draft.payload);
  if (draft.dedupe_key) {
    statement.bind(3, *draft.dedupe_key);
  } else {
    statement.bind_null(3);
  }
  statement.bind(4, draft.not_before ? epoch_ms(*draft.not_before) : std::int64_t{0});
  statement.step();
  return WorkItem{statement.int64(0), session_id, draft.payload, draft.dedupe_key, 0};
}

inline std::optional<Claim> claim(SqliteConnection& connection, const std::string& session_id, const std::string& owner,
                                  std::chrono::milliseconds lease, std::size_t max_items) {
  Transaction transaction(connection);
  const auto now = wall_clock_ms();
  Claim result{session_id, owner, random_token(), 0, {}};
  {
    auto take = connection.prepare(sql::take_ready);
    take.bind(1, session_id).bind(2, now).bind(3, result.token).bind(4, now + lease.count())
        .bind(5, static_cast<std::int64_t>(max_items));
    while (take.step()) result.items.push_back(read_item(take, session_id));
  }
  if (result.items.empty()) return std::nullopt;  // nothing written: the transaction rolls back
  std::sort(result.items.begin(), result.items.end(), [](const WorkItem& a, const WorkItem& b) { return a.id < b.id; });
  {
    auto fence = connection.prepare(sql::next_fence);
    fence.step();
    result.fence = static_cast<std::uint64_t>(fence.int64(0));
  }
  connection.prepare(sql::drop_expired_claims).bind(1, now).run();
  connection.prepare(sql::add_claim).bind(1, result.token).bind(2, session_id).bind(3, owner)
      .bind(4, static_cast<std::int64_t>(result.fence)).bind(5, now + lease.count()).run();
  transaction.commit();
  return result;
}

/// Throws errc::claim_superseded unless every item of the claim is still held
/// by its token (an expired claim whose items nobody took still holds them).
inline void require_claim_holds(SqliteConnection& connection, const Claim& claim, std::string_view operation) {
  auto statement = connection.prepare(sql::held_by_claim);
  statement.bind(1, claim.token);
  statement.step();
  const auto held = static_cast<std::size_t>(statement.int64(0));
  if (held != claim.items.size())
    throw Error(errc::claim_superseded,
                fmt::format("{}: claim with fence {} on session '{}' holds {} of its {} items; "
                            "its lease expired and another claim took the rest, or they were completed",
                            operation, claim.fence, claim.session_id, held, claim.items.size()));
}

inline void complete_claim(SqliteConnection& connection, const Claim& claim) {
  require_claim_holds(connection, claim, "complete");
  connection.prepare(sql::complete_items).bind(1, claim.token).run();
  connection.prepare(sql::drop_claim).bind(1, claim.token).run();
}

inline Page<WorkItem> pending(SqliteConnection& connection, const std::string& session_id, const PageRequest& page) {
  auto statement = connection.prepare(sql::pending);
  statement.bind(1, session_id).bind(2, numeric_cursor(page, "SessionStore::pending", 0))
      .bind(3, static_cast<std::int64_t>(page.limit) + 1);
  return read_page<WorkItem>(
      statement, page.limit, [&](const Statement& row) { return read_item(row, session_id); },
      [](const Statement& row) { return std::to_string(row.int64(0)); });
}

// --- graph --------------------------------------------------------------------

inline void append_nodes(SqliteConnection& connection, const std::string& session_id,
                         const std::vector<GraphNode>& nodes) {
  for (const auto& node : nodes) {
    require_id("graph node id", node.node_id);
    auto exists = [&](const std::string& id) {
      auto statement = connection.prepare(sql::node_exists);
      statement.bind(1, session_id).bind(2, id);
      return statement.step();
    };
    if (exists(node.node_id))
      throw Error(errc::invalid_argument,
                  fmt::format("graph node '{}' already exists in session '{}'", node.node_id, session_id));
    {
      // Only a file vacuumed by lockstore 0.3 or older has such nodes: the
      // new node would adopt them, and could close a cycle.
      auto orphans = connection.prepare(sql::named_as_parent);
      orphans.bind(1, session_id).bind(2, node.node_id);
      if (orphans.step())
        throw Error(errc::invalid_argument,
                    fmt::format("graph node id '{}' in session '{}' was deleted while nodes still name it as their "
                                "parent; use another id",
                                node.node_id, session_id));
    }
    if (node.parent_id && !exists(*node.parent_id))
      throw Error(errc::invalid_argument, fmt::format("parent '{}' of graph node '{}' is not in session '{}'",
                                                      *node.parent_id, node.node_id, session_id));
    auto insert = connection.prepare(sql::add_node);
    insert.bind(1, session_id).bind(2, node.node_id).bind_blob(4, node.payload);
    if (node.parent_id) {
      insert.bind(3, *node.parent_id);
    } else {
      insert.bind_null(3);
    }
    insert.run();
  }
}

/// The active path, root first, without tombstoned nodes; errc::corrupt_data
/// when the parent links loop (only a damaged file has such links).
inline std::vector<GraphNode> active_path(SqliteConnection& connection, const std::string& session_id,
                                          const std::string& leaf_id) {
  auto statement = connection.prepare(sql::active_path);
  statement.bind(1, session_id).bind(2, leaf_id);
  std::vector<GraphNode> path;
  std::set<std::string> seen;
  while (statement.step()) {
    auto node_id = statement.text(0);
    if (!seen.insert(node_id).second)
      throw Error(errc::corrupt_data, fmt::format("the graph of session '{}' in '{}' has a parent cycle through node "
                                                  "'{}'",
                                                  session_id, connection.path().string(), node_id));
    if (statement.int64(3) != 0) continue;  // tombstoned: walked through, not returned
    path.push_back(GraphNode{std::move(node_id),
                             statement.is_null(1) ? std::nullopt : std::optional<std::string>(statement.text(1)),
                             statement.blob(2)});
  }
  return path;
}

/// A page of the session's live nodes in insertion order (the cursor is
/// the insertion position of the last node returned).
inline Page<GraphNode> load_graph(SqliteConnection& connection, const std::string& session_id,
                                  const PageRequest& page) {
  auto statement = connection.prepare(sql::graph);
  statement.bind(1, session_id).bind(2, numeric_cursor(page, "SessionStore::load_graph", 0))
      .bind(3, static_cast<std::int64_t>(page.limit) + 1);
  return read_page<GraphNode>(
      statement, page.limit,
      [](const Statement& row) {
        return GraphNode{row.text(0), row.is_null(1) ? std::nullopt : std::optional<std::string>(row.text(1)),
                         row.blob(2)};
      },
      [](const Statement& row) { return std::to_string(row.int64(3)); });
}

// --- commit -------------------------------------------------------------------

/// Adds the history row of a new head and keeps the session's last `keep`.
inline void record_history(SqliteConnection& connection, const std::string& session_id, std::uint64_t revision,
                           const BlobRef& checkpoint, const std::string* parent_session,
                           std::optional<std::uint64_t> parent_revision, const std::optional<std::string>& metadata,
                           std::int64_t now, std::size_t keep) {
  auto insert = connection.prepare(sql::add_history);
  insert.bind(1, session_id).bind(2, static_cast<std::int64_t>(revision)).bind(3, checkpoint.hash);
  if (parent_session != nullptr) {
    insert.bind(4, *parent_session);
  } else {
    insert.bind_null(4);
  }
  if (parent_revision) {
    insert.bind(5, static_cast<std::int64_t>(*parent_revision));
  } else {
    insert.bind_null(5);
  }
  if (metadata) {
    insert.bind_blob(6, *metadata);
  } else {
    insert.bind_null(6);
  }
  insert.bind(7, now).run();
  add_ref(connection, checkpoint.hash);
  if (revision <= keep) return;
  std::vector<std::string> dropped;
  {
    auto trim = connection.prepare(sql::trim_history);
    trim.bind(1, session_id).bind(2, static_cast<std::int64_t>(revision - keep));
    while (trim.step()) dropped.push_back(trim.text(0));
  }
  for (const auto& hash : dropped) drop_ref(connection, hash, now);
}

inline CommitResult commit(SqliteConnection& connection, const CommitRequest& request, const HashedCheckpoint& hashed,
                           std::size_t keep_history) {
  require_id("session id", request.session_id);
  if (request.complete_claim && request.complete_claim->session_id != request.session_id)
    throw Error(errc::invalid_argument,
                fmt::format("commit on session '{}' cannot complete a claim on session '{}'", request.session_id,
                            request.complete_claim->session_id));
  Transaction transaction(connection);
  if (request.lease) {
    auto check = connection.prepare(sqlite_fenced::lease_is_live);
    check.bind(1, request.lease->key).bind(2, request.lease->token);
    if (!check.step())
      throw Error(errc::lock_lost,
                  fmt::format("session '{}': the commit's lease on '{}' is no longer held (it expired or was taken "
                              "over); nothing was written",
                              request.session_id, request.lease->key));
  }
  std::uint64_t found = 0;
  std::optional<std::string> previous;  // the checkpoint the head names now
  {
    auto head = connection.prepare(sql::head);
    head.bind(1, request.session_id);
    if (head.step()) {
      found = static_cast<std::uint64_t>(head.int64(0));
      previous = head.text(1);
    }
  }
  if (found != request.expected_head_revision)
    throw Error(errc::head_revision_conflict,
                fmt::format("session '{}': commit expected head revision {} but found {}", request.session_id,
                            request.expected_head_revision, found));
  const auto checkpoint = put_checkpoint(connection, request.parts, hashed);
  append_nodes(connection, request.session_id, request.append_nodes);
  if (request.complete_claim) complete_claim(connection, *request.complete_claim);
  for (const auto& draft : request.enqueue) enqueue(connection, request.session_id, draft);
  const auto revision = found + 1;
  const auto now = wall_clock_ms();
  connection.prepare(sql::set_head).bind(1, request.session_id).bind(2, static_cast<std::int64_t>(revision))
      .bind(3, checkpoint.hash).bind(4, now).run();
  if (previous != checkpoint.hash) {
    add_ref(connection, checkpoint.hash);
    if (previous) drop_ref(connection, *previous, now);  // superseded: collectable after the grace period
  }
  record_history(connection, request.session_id, revision, checkpoint, nullptr,
                 found == 0 ? std::nullopt : std::optional<std::uint64_t>(found), request.metadata, now, keep_history);
  transaction.commit();
  return CommitResult{revision, checkpoint};
}

/// Creates session `target` at revision 1 on the checkpoint of `source`'s
/// revision `revision`, in one transaction. The checkpoint is shared, not
/// copied; the graph and the queue are not forked.
inline CommitResult fork(SqliteConnection& connection, const std::string& source, std::uint64_t revision,
                         const std::string& target, const std::optional<std::string>& metadata,
                         std::size_t keep_history) {
  require_id("session id", source);
  require_id("session id", target);
  Transaction transaction(connection);
  BlobRef checkpoint;
  {
    auto row = connection.prepare(sql::revision);
    row.bind(1, source).bind(2, static_cast<std::int64_t>(revision));
    if (!row.step())
      throw Error(errc::invalid_argument,
                  fmt::format("cannot fork session '{}' at revision {}: its history does not hold that revision "
                              "(StoreOptions::history keeps the last ones only)",
                              source, revision));
    checkpoint = BlobRef{row.text(0)};
  }
  {
    auto head = connection.prepare(sql::head);
    head.bind(1, target);
    if (head.step())
      throw Error(errc::head_revision_conflict,
                  fmt::format("cannot fork into session '{}': it exists (head revision {}); a fork starts a new "
                              "session",
                              target, head.int64(0)));
  }
  const auto now = wall_clock_ms();
  connection.prepare(sql::set_head).bind(1, target).bind(2, std::int64_t{1}).bind(3, checkpoint.hash).bind(4, now)
      .run();
  add_ref(connection, checkpoint.hash);
  record_history(connection, target, 1, checkpoint, &source, revision, metadata, now, keep_history);
  transaction.commit();
  return CommitResult{1, checkpoint};
}

/// Deletes the session's head, history, graph, queue items and claims in
/// the caller's transaction; its blobs lose those references (and go to
/// gc()). False if the session had none of these.
inline bool delete_session(SqliteConnection& connection, const std::string& session_id) {
  const auto now = wall_clock_ms();
  bool found = false;
  for (const char* statement_sql : {sql::delete_head, sql::delete_history}) {
    std::vector<std::string> dropped;
    {
      auto statement = connection.prepare(statement_sql);
      statement.bind(1, session_id);
      while (statement.step()) dropped.push_back(statement.text(0));
    }
    found = found || !dropped.empty();
    for (const auto& hash : dropped) drop_ref(connection, hash, now);
  }
  for (const char* statement_sql : {sql::delete_nodes, sql::delete_items, sql::delete_claims})
    found = connection.prepare(statement_sql).bind(1, session_id).run() > 0 || found;
  return found;
}

/// Deletes up to `max_sessions` sessions whose head last moved before
/// `cutoff_ms` and that no live claim works on, in one transaction; returns
/// how many.
inline std::size_t delete_idle_sessions(SqliteConnection& connection, std::int64_t cutoff_ms,
                                        std::size_t max_sessions) {
  Transaction transaction(connection);
  std::vector<std::string> idle;
  {
    auto statement = connection.prepare(sql::idle_sessions);
    statement.bind(1, cutoff_ms).bind(2, static_cast<std::int64_t>(max_sessions)).bind(3, wall_clock_ms());
    while (statement.step()) idle.push_back(statement.text(0));
  }
  for (const auto& session_id : idle) delete_session(connection, session_id);
  transaction.commit();
  return idle.size();
}

}  // namespace lockstore::detail::store
