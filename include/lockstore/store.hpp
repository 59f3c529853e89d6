// SessionStore: the durable state of agent sessions, in the same SQLite file
// (same SqliteDatabase, connection thread and schema version) as the locks.
// Head-revision compare-and-set commits; content-addressed checkpoint blobs
// with garbage collection; a leased work queue with fencing; a session graph.
// Every write is one BEGIN IMMEDIATE transaction. Needs SQLite3 and OpenSSL
// libcrypto (target lockstore::store).
#pragma once

#include "lockstore/detail/store_ops.hpp"
#include "lockstore/sqlite.hpp"
#include "lockstore/store_types.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <memory>

namespace lockstore {

class SessionStore {
 public:
  /// Opens the store on a database (its schema is created with the file).
  /// On a read-only database every read works and every write throws
  /// errc::backend_failure. Throws errc::invalid_argument for
  /// gc_every_commits == 0.
  static asio::awaitable<SessionStore> open(SqliteDatabase database, StoreOptions options = {}) {
    if (options.gc_every_commits && *options.gc_every_commits == 0)
      throw Error(errc::invalid_argument, "StoreOptions::gc_every_commits must be at least 1");
    if (options.gc_grace < std::chrono::milliseconds::zero() || options.gc_grace > std::chrono::hours(24 * 366))
      throw Error(errc::invalid_argument,
                  fmt::format("StoreOptions::gc_grace of {} ms is out of range (0 to a year)", options.gc_grace.count()));
    co_await database.run([](detail::SqliteConnection&) {});  // the connection is open and migrated
    co_return SessionStore(std::move(database), options);
  }

  const SqliteDatabase& database() const noexcept { return database_; }

  /// Applies the whole request in one transaction, or nothing. Throws
  /// errc::head_revision_conflict (naming expected and found revisions) for
  /// a stale expected revision, errc::claim_superseded if the claim to
  /// complete no longer holds all its items, errc::invalid_argument for a
  /// duplicate or orphan graph node, an empty part name or a bad id.
  asio::awaitable<CommitResult> commit(CommitRequest request) {
    database_.require_writable("SessionStore::commit");
    const std::string session = request.session_id;
    auto job = [request = std::move(request)](detail::SqliteConnection& connection) {
      return detail::store::commit(connection, request);
    };
    auto committing = database_.run(std::move(job));
    auto result = co_await std::move(committing);
    if (options_.gc_every_commits && ++state_->commits % *options_.gc_every_commits == 0) {
      // The commit is applied: nothing the collection meets (a busy file, a
      // full disk, a damaged blob) may turn it into an error the caller
      // would retry. The next collection tries again.
      bool collected = true;
      std::string failure;
      try {
        auto collecting = gc();
        co_await std::move(collecting);
      } catch (const std::exception& error) {
        collected = false;
        failure = error.what();
      }
      if (!collected)
        detail::log(LogLevel::warning,
                    fmt::format("SessionStore: automatic gc after a commit on session '{}' failed, the commit stands: {}",
                                session, failure));
    }
    co_return result;
  }

  /// The session's head with its checkpoint's parts, all read from one
  /// snapshot of the file (one read transaction), so another handle's
  /// commit or gc meanwhile cannot make it inconsistent. std::nullopt for a
  /// session never committed; errc::corrupt_data when the checkpoint or a
  /// part is missing or damaged.
  asio::awaitable<std::optional<SessionSnapshot>> load_snapshot(std::string session_id) {
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
      return detail::store::load_snapshot(connection, session_id);
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// The session's head, or std::nullopt for a session never committed.
  asio::awaitable<std::optional<SessionHead>> load(std::string session_id) {
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) -> std::optional<SessionHead> {
      auto statement = connection.prepare(detail::store::sql::head);
      statement.bind(1, session_id);
      if (!statement.step()) return std::nullopt;
      return SessionHead{session_id, static_cast<std::uint64_t>(statement.int64(0)), BlobRef{statement.text(1)}};
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// Every session's head, ordered by session id.
  asio::awaitable<std::vector<SessionHead>> sessions() {
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      auto statement = connection.prepare(detail::store::sql::sessions);
      std::vector<SessionHead> heads;
      while (statement.step())
        heads.push_back(SessionHead{statement.text(0), static_cast<std::uint64_t>(statement.int64(1)),
                                    BlobRef{statement.text(2)}});
      return heads;
    });
  }

  asio::awaitable<StoreStats> stats() {
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      auto statement = connection.prepare(detail::store::sql::stats);
      statement.step();
      return StoreStats{static_cast<std::size_t>(statement.int64(0)), static_cast<std::size_t>(statement.int64(1)),
                        static_cast<std::size_t>(statement.int64(2)), static_cast<std::uint64_t>(statement.int64(3))};
    });
  }

  /// Stores bytes under their SHA-256; the same bytes are stored once.
  asio::awaitable<BlobRef> put_blob(std::string bytes) {
    database_.require_writable("SessionStore::put_blob");
    auto job = [bytes = std::move(bytes)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);  // stored, counted and queued together, or not at all
      auto ref = detail::store::put_blob(connection, bytes);
      transaction.commit();
      return ref;
    };
    auto putting = database_.run(std::move(job));
    co_return co_await std::move(putting);
  }

  /// The blob's bytes, or std::nullopt if absent. errc::corrupt_data if the
  /// stored bytes no longer match the hash.
  asio::awaitable<std::optional<std::string>> get_blob(BlobRef ref) {
    detail::store::require_ref(ref);
    auto job = [ref = std::move(ref)](detail::SqliteConnection& connection) {
      return detail::store::get_blob(connection, ref);
    };
    auto getting = database_.run(std::move(job));
    co_return co_await std::move(getting);
  }

  /// The decoded manifest, or std::nullopt if absent; errc::corrupt_data if
  /// it is not a checkpoint manifest.
  asio::awaitable<std::optional<Checkpoint>> get_checkpoint(BlobRef ref) {
    auto getting = get_blob(std::move(ref));
    auto bytes = co_await std::move(getting);
    if (!bytes) co_return std::nullopt;
    co_return detail::decode_manifest(*bytes);
  }

  /// Keeps a blob (and, for a manifest, its parts) through gc(). Pins count:
  /// each pin needs its unpin. errc::invalid_argument for an unknown blob.
  asio::awaitable<void> pin(BlobRef ref) {
    database_.require_writable("SessionStore::pin");
    detail::store::require_ref(ref);
    auto job = [ref = std::move(ref)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      if (!detail::store::blob_exists(connection, ref.hash))
        throw Error(errc::invalid_argument, fmt::format("cannot pin {}: no such blob", ref.hash));
      connection.prepare(detail::store::sql::pin).bind(1, ref.hash).run();
      detail::store::add_ref(connection, ref.hash);
      transaction.commit();
    };
    auto pinning = database_.run(std::move(job));
    co_await std::move(pinning);
  }

  /// Undoes one pin; unpinning a blob that is not pinned does nothing.
  asio::awaitable<void> unpin(BlobRef ref) {
    database_.require_writable("SessionStore::unpin");
    detail::store::require_ref(ref);
    auto job = [ref = std::move(ref)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      if (connection.prepare(detail::store::sql::unpin).bind(1, ref.hash).run() == 1)
        detail::store::drop_ref(connection, ref.hash, detail::wall_clock_ms());
      connection.prepare(detail::store::sql::drop_unpinned).bind(1, ref.hash).run();
      transaction.commit();
    };
    auto unpinning = database_.run(std::move(job));
    co_await std::move(unpinning);
  }

  /// Deletes every blob that no session head's checkpoint (manifest and
  /// parts) and no pin has referenced for StoreOptions::gc_grace. Blobs
  /// count their references as they are committed, pinned and superseded,
  /// so gc() reads only the blobs that lost their last one: its cost follows
  /// the garbage, not the store. It works in batches of one short write
  /// transaction each (a few milliseconds), so locks and commits of every
  /// process go on in between. Reads no blob's bytes: a damaged blob does
  /// not stop it.
  asio::awaitable<GcReport> gc() {
    database_.require_writable("SessionStore::gc");
    const auto cutoff = detail::wall_clock_ms() - options_.gc_grace.count();
    // Each batch looks blobs up in random order in several indexes: a 64 MB
    // page cache for the collection keeps those pages between batches
    // (SQLite's default 2 MB made the cost per blob grow with the store).
    auto widening = database_.run([](detail::SqliteConnection& connection) {
      const auto previous = connection.pragma_int("cache_size");
      connection.exec("PRAGMA cache_size = -65536");
      return previous;
    });
    const auto previous_cache = co_await std::move(widening);
    const auto restore_cache = [previous_cache](detail::SqliteConnection& connection) {
      connection.exec(fmt::format("PRAGMA cache_size = {}", previous_cache));
    };
    std::size_t deleted = 0;
    try {
      for (;;) {
        auto batching = database_.run([cutoff](detail::SqliteConnection& connection) {
          return detail::store::gc_batch(connection, cutoff, gc_batch_blobs, gc_batch_budget);
        });
        const auto batch = co_await std::move(batching);
        deleted += batch.deleted;
        if (!batch.more) break;
      }
    } catch (...) {
      database_.post(restore_cache);
      throw;
    }
    database_.post(restore_cache);
    co_return co_await database_.run(
        [deleted](detail::SqliteConnection& connection) { return detail::store::gc_report(connection, deleted); });
  }

  /// At most this many queued blobs, and this much time, per GC batch.
  static constexpr std::size_t gc_batch_blobs = 512;
  static constexpr std::chrono::microseconds gc_batch_budget{8000};

  /// Adds a work item; with a dedupe key already pending, returns that item.
  asio::awaitable<WorkItem> enqueue(std::string session_id, WorkDraft draft) {
    database_.require_writable("SessionStore::enqueue");
    detail::store::require_id("session id", session_id);
    auto job = [session_id = std::move(session_id), draft = std::move(draft)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      auto item = detail::store::enqueue(connection, session_id, draft);
      transaction.commit();
      return item;
    };
    auto enqueueing = database_.run(std::move(job));
    co_return co_await std::move(enqueueing);
  }

  /// Takes up to max_items of the session's oldest ready items (not held by a
  /// live claim, not_before passed) under a new claim with a new token and a
  /// fence larger than every earlier claim's; std::nullopt if none is ready.
  asio::awaitable<std::optional<Claim>> claim(std::string session_id, std::string owner,
                                              std::chrono::milliseconds lease, std::size_t max_items) {
    database_.require_writable("SessionStore::claim");
    detail::store::require_id("session id", session_id);
    detail::store::require_id("claim owner", owner);
    detail::validate_ttl(lease, "SessionStore::claim");
    if (max_items == 0) throw Error(errc::invalid_argument, "SessionStore::claim: max_items must be at least 1");
    auto job = [session_id = std::move(session_id), owner = std::move(owner), lease, max_items](
                   detail::SqliteConnection& connection) {
      return detail::store::claim(connection, session_id, owner, lease, max_items);
    };
    auto claiming = database_.run(std::move(job));
    co_return co_await std::move(claiming);
  }

  /// Extends the claim's lease to now + lease; errc::claim_superseded if
  /// another claim took any of its items.
  asio::awaitable<void> renew(const Claim& claim, std::chrono::milliseconds lease) {
    database_.require_writable("SessionStore::renew");
    detail::validate_ttl(lease, "SessionStore::renew");
    auto job = [claim, lease](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      detail::store::require_claim_holds(connection, claim, "renew");
      const auto until = detail::wall_clock_ms() + lease.count();
      connection.prepare(detail::store::sql::renew_items).bind(1, claim.token).bind(2, until).run();
      connection.prepare(detail::store::sql::renew_claim).bind(1, claim.token).bind(2, until).run();
      transaction.commit();
    };
    auto renewing = database_.run(std::move(job));
    co_await std::move(renewing);
  }

  /// Deletes the claim's items; errc::claim_superseded if it lost any.
  asio::awaitable<void> complete(const Claim& claim) {
    database_.require_writable("SessionStore::complete");
    auto job = [claim](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      detail::store::complete_claim(connection, claim);
      transaction.commit();
    };
    auto completing = database_.run(std::move(job));
    co_await std::move(completing);
  }

  /// Makes the items this claim still holds ready again at once.
  asio::awaitable<void> abandon(const Claim& claim) {
    database_.require_writable("SessionStore::abandon");
    auto job = [token = claim.token](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      connection.prepare(detail::store::sql::abandon_duplicates).bind(1, token).run();
      connection.prepare(detail::store::sql::abandon_items).bind(1, token).run();
      connection.prepare(detail::store::sql::drop_claim).bind(1, token).run();
      transaction.commit();
    };
    auto abandoning = database_.run(std::move(job));
    co_await std::move(abandoning);
  }

  /// Items of the session not yet completed (claimed or not), oldest first.
  asio::awaitable<std::vector<WorkItem>> pending(std::string session_id) {
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
      return detail::store::pending(connection, session_id);
    };
    auto listing = database_.run(std::move(job));
    co_return co_await std::move(listing);
  }

  /// Appends nodes in order; a node's parent must already exist in the
  /// session (or come earlier in `nodes`). errc::invalid_argument for a
  /// duplicate node id or an unknown parent; nothing is appended then.
  asio::awaitable<void> append_nodes(std::string session_id, std::vector<GraphNode> nodes) {
    database_.require_writable("SessionStore::append_nodes");
    detail::store::require_id("session id", session_id);
    auto job = [session_id = std::move(session_id), nodes = std::move(nodes)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      detail::store::append_nodes(connection, session_id, nodes);
      transaction.commit();
    };
    auto appending = database_.run(std::move(job));
    co_await std::move(appending);
  }

  /// The session's live (not tombstoned) nodes in insertion order.
  asio::awaitable<std::vector<GraphNode>> load_graph(std::string session_id) {
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
      auto statement = connection.prepare(detail::store::sql::graph);
      statement.bind(1, session_id);
      return detail::store::read_nodes(statement);
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// The path from the root to `leaf_id`, root first, without tombstoned
  /// nodes; empty for an unknown leaf. One recursive query.
  asio::awaitable<std::vector<GraphNode>> active_path(std::string session_id, std::string leaf_id) {
    auto job = [session_id = std::move(session_id), leaf_id = std::move(leaf_id)](detail::SqliteConnection& connection) {
      return detail::store::active_path(connection, session_id, leaf_id);
    };
    auto walking = database_.run(std::move(job));
    co_return co_await std::move(walking);
  }

  /// Hides nodes from load_graph and active_path; returns how many were
  /// newly tombstoned (unknown or already tombstoned ids count 0).
  asio::awaitable<std::size_t> tombstone(std::string session_id, std::vector<std::string> node_ids) {
    database_.require_writable("SessionStore::tombstone");
    auto job = [session_id = std::move(session_id), node_ids = std::move(node_ids)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      std::size_t count = 0;
      for (const auto& id : node_ids)
        count += static_cast<std::size_t>(
            connection.prepare(detail::store::sql::tombstone).bind(1, session_id).bind(2, id).run());
      transaction.commit();
      return count;
    };
    auto hiding = database_.run(std::move(job));
    co_return co_await std::move(hiding);
  }

  /// Deletes the tombstoned nodes of every session that no live node needs
  /// on its path (whole tombstoned subtrees); returns how many. A
  /// tombstoned node with a live descendant stays until that one goes too.
  asio::awaitable<std::size_t> vacuum() {
    database_.require_writable("SessionStore::vacuum");
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      return static_cast<std::size_t>(connection.prepare(detail::store::sql::vacuum).run());
    });
  }

 private:
  struct State {
    std::atomic<std::uint64_t> commits{0};
  };

  SessionStore(SqliteDatabase database, StoreOptions options)
      : database_(std::move(database)), options_(options), state_(std::make_shared<State>()) {}

  SqliteDatabase database_;
  StoreOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace lockstore
