// The SessionStore's operations as plain functions on a SqliteConnection.
// They run on the connection's thread (SessionStore wraps each in one job),
// and each write runs in one BEGIN IMMEDIATE transaction: all or nothing.
#pragma once

#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/manifest.hpp"
#include "lockstore/detail/sha256.hpp"
#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/lock_guard.hpp"
#include "lockstore/store_types.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lockstore::detail::store {

namespace sql {

inline constexpr const char* head = "SELECT head_revision, checkpoint_hash FROM lockstore_sessions WHERE session_id = ?1";
inline constexpr const char* set_head = R"sql(
INSERT INTO lockstore_sessions (session_id, head_revision, checkpoint_hash, updated_ms) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (session_id) DO UPDATE SET
  head_revision = excluded.head_revision, checkpoint_hash = excluded.checkpoint_hash, updated_ms = excluded.updated_ms)sql";
inline constexpr const char* sessions = "SELECT session_id, head_revision, checkpoint_hash FROM lockstore_sessions ORDER BY session_id";

inline constexpr const char* put_blob =
    "INSERT INTO lockstore_blobs (hash, size, bytes) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING";
inline constexpr const char* get_blob = "SELECT bytes FROM lockstore_blobs WHERE hash = ?1";
inline constexpr const char* blob_exists = "SELECT 1 FROM lockstore_blobs WHERE hash = ?1";
inline constexpr const char* add_part =
    "INSERT OR IGNORE INTO lockstore_blob_parts (manifest_hash, part_hash) VALUES (?1, ?2)";
inline constexpr const char* pin = R"sql(
INSERT INTO lockstore_pins (hash, count) VALUES (?1, 1) ON CONFLICT (hash) DO UPDATE SET count = count + 1)sql";
inline constexpr const char* unpin = "UPDATE lockstore_pins SET count = count - 1 WHERE hash = ?1";
inline constexpr const char* drop_unpinned = "DELETE FROM lockstore_pins WHERE hash = ?1 AND count <= 0";

inline constexpr const char* live_manifests = R"sql(
SELECT s.session_id, b.hash, b.bytes FROM lockstore_sessions s JOIN lockstore_blobs b ON b.hash = s.checkpoint_hash)sql";
inline constexpr const char* gc_prepare = R"sql(
CREATE TEMP TABLE IF NOT EXISTS lockstore_gc_live (hash TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
DELETE FROM temp.lockstore_gc_live;
INSERT OR IGNORE INTO temp.lockstore_gc_live SELECT checkpoint_hash FROM lockstore_sessions;
INSERT OR IGNORE INTO temp.lockstore_gc_live SELECT hash FROM lockstore_pins;
INSERT OR IGNORE INTO temp.lockstore_gc_live
  SELECT p.part_hash FROM lockstore_blob_parts p JOIN temp.lockstore_gc_live l ON l.hash = p.manifest_hash;
)sql";
inline constexpr const char* gc_roots =
    "SELECT (SELECT COUNT(*) FROM lockstore_sessions) + (SELECT COUNT(*) FROM lockstore_pins)";
inline constexpr const char* gc_retained =
    "SELECT COUNT(*) FROM lockstore_blobs WHERE hash IN (SELECT hash FROM temp.lockstore_gc_live)";
inline constexpr const char* gc_delete =
    "DELETE FROM lockstore_blobs WHERE hash NOT IN (SELECT hash FROM temp.lockstore_gc_live)";

inline constexpr const char* find_dedupe = R"sql(
SELECT id, payload, attempts FROM lockstore_work_items WHERE session_id = ?1 AND dedupe_key = ?2)sql";
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
inline constexpr const char* drop_expired_claims = R"sql(
DELETE FROM lockstore_claims WHERE expires_ms <= ?1
  AND NOT EXISTS (SELECT 1 FROM lockstore_work_items w WHERE w.claim_token = lockstore_claims.token))sql";
inline constexpr const char* pending = R"sql(
SELECT id, payload, dedupe_key, attempts FROM lockstore_work_items WHERE session_id = ?1 ORDER BY id)sql";

inline constexpr const char* node_exists =
    "SELECT 1 FROM lockstore_graph_nodes WHERE session_id = ?1 AND node_id = ?2";
inline constexpr const char* add_node =
    "INSERT INTO lockstore_graph_nodes (session_id, node_id, parent_id, payload) VALUES (?1, ?2, ?3, ?4)";
inline constexpr const char* graph = R"sql(
SELECT node_id, parent_id, payload FROM lockstore_graph_nodes
WHERE session_id = ?1 AND tombstoned = 0 ORDER BY seq)sql";
// Walks from the leaf to the root through the (session_id, node_id) unique
// index; tombstoned nodes are walked through but not returned.
inline constexpr const char* active_path = R"sql(
WITH RECURSIVE path (node_id, parent_id, payload, tombstoned, depth) AS (
  SELECT node_id, parent_id, payload, tombstoned, 0 FROM lockstore_graph_nodes
  WHERE session_id = ?1 AND node_id = ?2
  UNION ALL
  SELECT n.node_id, n.parent_id, n.payload, n.tombstoned, path.depth + 1
  FROM lockstore_graph_nodes n JOIN path ON n.session_id = ?1 AND n.node_id = path.parent_id
)
SELECT node_id, parent_id, payload FROM path WHERE tombstoned = 0 ORDER BY depth DESC)sql";
inline constexpr const char* tombstone = R"sql(
UPDATE lockstore_graph_nodes SET tombstoned = 1 WHERE session_id = ?1 AND node_id = ?2 AND tombstoned = 0)sql";
inline constexpr const char* vacuum = "DELETE FROM lockstore_graph_nodes WHERE tombstoned = 1";

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

// --- blobs ------------------------------------------------------------------

inline BlobRef put_blob(SqliteConnection& connection, std::string_view bytes) {
  BlobRef ref{sha256_hex(bytes)};
  auto statement = connection.prepare(sql::put_blob);
  statement.bind(1, ref.hash).bind(2, static_cast<std::int64_t>(bytes.size())).bind_blob(3, bytes);
  statement.run();
  return ref;
}

/// The bytes of a blob, checked against its hash (errc::corrupt_data if they
/// no longer match), or std::nullopt if there is no such blob.
inline std::optional<std::string> get_blob(SqliteConnection& connection, const BlobRef& ref) {
  auto statement = connection.prepare(sql::get_blob);
  statement.bind(1, ref.hash);
  if (!statement.step()) return std::nullopt;
  auto bytes = statement.blob(0);
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
inline BlobRef put_checkpoint(SqliteConnection& connection, const std::map<std::string, std::string>& parts) {
  Checkpoint checkpoint;
  for (const auto& [name, bytes] : parts) {
    if (name.empty()) throw Error(errc::invalid_argument, "checkpoint part names must not be empty");
    checkpoint.parts.emplace(name, put_blob(connection, bytes));
  }
  const auto manifest = put_blob(connection, encode_manifest(checkpoint));
  for (const auto& [name, part] : checkpoint.parts)
    connection.prepare(sql::add_part).bind(1, manifest.hash).bind(2, part.hash).run();
  return manifest;
}

// GC deletes from the blob table and its hash index, which is in random
// order: with SQLite's default 2 MB page cache, per-blob cost grew 2.5x from
// 10k to 1M blobs. A 64 MB cache for the GC's transaction keeps the index
// pages it revisits; the connection's own setting is restored afterwards.
class ScopedCacheSize {
 public:
  ScopedCacheSize(SqliteConnection& connection, std::int64_t kibibytes)
      : connection_(connection), previous_(connection.pragma_int("cache_size")) {
    connection_.exec(fmt::format("PRAGMA cache_size = -{}", kibibytes));
  }
  ScopedCacheSize(const ScopedCacheSize&) = delete;
  ScopedCacheSize& operator=(const ScopedCacheSize&) = delete;
  ~ScopedCacheSize() {
    const auto restore = fmt::format("PRAGMA cache_size = {}", previous_);
    sqlite3_exec(connection_.handle(), restore.c_str(), nullptr, nullptr, nullptr);
  }

 private:
  SqliteConnection& connection_;
  std::int64_t previous_;
};

inline GcReport gc(SqliteConnection& connection) {
  ScopedCacheSize cache(connection, 64 * 1024);
  Transaction transaction(connection);
  {
    // A live manifest that cannot be decoded means the mark would be wrong:
    // stop before deleting anything.
    auto statement = connection.prepare(sql::live_manifests);
    while (statement.step()) {
      try {
        decode_manifest(statement.blob(2));
      } catch (const Error& error) {
        throw Error(errc::corrupt_data, fmt::format("gc aborted, nothing deleted: the checkpoint {} of session '{}' "
                                                    "cannot be decoded ({})",
                                                    statement.text(1), statement.text(0), error.message()));
      }
    }
  }
  connection.exec(sql::gc_prepare);
  GcReport report{};
  {
    auto roots = connection.prepare(sql::gc_roots);
    roots.step();
    report.root_count = static_cast<std::size_t>(roots.int64(0));
  }
  {
    auto retained = connection.prepare(sql::gc_retained);
    retained.step();
    report.retained_blob_count = static_cast<std::size_t>(retained.int64(0));
  }
  report.deleted_blob_count = static_cast<std::size_t>(connection.prepare(sql::gc_delete).run());
  transaction.commit();
  return report;
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

inline std::vector<WorkItem> pending(SqliteConnection& connection, const std::string& session_id) {
  auto statement = connection.prepare(sql::pending);
  statement.bind(1, session_id);
  std::vector<WorkItem> items;
  while (statement.step()) items.push_back(read_item(statement, session_id));
  return items;
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

inline std::vector<GraphNode> read_nodes(Statement& statement) {
  std::vector<GraphNode> nodes;
  while (statement.step())
    nodes.push_back(GraphNode{statement.text(0),
                              statement.is_null(1) ? std::nullopt : std::optional<std::string>(statement.text(1)),
                              statement.blob(2)});
  return nodes;
}

// --- commit -------------------------------------------------------------------

inline CommitResult commit(SqliteConnection& connection, const CommitRequest& request) {
  require_id("session id", request.session_id);
  if (request.complete_claim && request.complete_claim->session_id != request.session_id)
    throw Error(errc::invalid_argument,
                fmt::format("commit on session '{}' cannot complete a claim on session '{}'", request.session_id,
                            request.complete_claim->session_id));
  Transaction transaction(connection);
  std::uint64_t found = 0;
  {
    auto head = connection.prepare(sql::head);
    head.bind(1, request.session_id);
    if (head.step()) found = static_cast<std::uint64_t>(head.int64(0));
  }
  if (found != request.expected_head_revision)
    throw Error(errc::head_revision_conflict,
                fmt::format("session '{}': commit expected head revision {} but found {}", request.session_id,
                            request.expected_head_revision, found));
  const auto checkpoint = put_checkpoint(connection, request.parts);
  append_nodes(connection, request.session_id, request.append_nodes);
  if (request.complete_claim) complete_claim(connection, *request.complete_claim);
  for (const auto& draft : request.enqueue) enqueue(connection, request.session_id, draft);
  const auto revision = found + 1;
  connection.prepare(sql::set_head).bind(1, request.session_id).bind(2, static_cast<std::int64_t>(revision))
      .bind(3, checkpoint.hash).bind(4, wall_clock_ms()).run();
  transaction.commit();
  return CommitResult{revision, checkpoint};
}

}  // namespace lockstore::detail::store
