// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
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
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <filesystem>
#include <limits>
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
    if (options.history == 0 || options.history > max_history)
      throw Error(errc::invalid_argument,
                  fmt::format("StoreOptions::history of {} is out of range (1 to {})", options.history, max_history));
    if (options.retention && *options.retention <= std::chrono::milliseconds::zero())
      throw Error(errc::invalid_argument,
                  fmt::format("StoreOptions::retention of {} ms must be positive", options.retention->count()));
    // The store's tables have their own schema version: a file whose locks
    // this build can use may still hold a store it cannot.
    co_await database.run([](detail::SqliteConnection& connection) { detail::check_store_schema(connection); });
    co_return SessionStore(std::move(database), options);
  }

  const SqliteDatabase& database() const noexcept { return database_; }

  /// The most checkpoints StoreOptions::history may keep per session.
  static constexpr std::size_t max_history = 1'000'000;

  /// Applies the whole request in one transaction, or nothing, and adds
  /// the new checkpoint (with request.metadata) to the session's history,
  /// which keeps the last StoreOptions::history. Throws
  /// errc::head_revision_conflict (naming expected and found revisions) for
  /// a stale expected revision, errc::claim_superseded if the claim to
  /// complete no longer holds all its items, errc::invalid_argument for a
  /// duplicate or orphan graph node, an empty part name or a bad id. Parts
  /// are hashed here, on the caller's thread: not under the file's write
  /// lock, and not on the connection thread, where it would hold up this
  /// process's lease renewals. They are written into the file in pieces,
  /// without another copy in memory.
  asio::awaitable<CommitResult> commit(CommitRequest request) {
    database_.require_writable("SessionStore::commit");
    const std::string session = request.session_id;
    auto hashed = detail::store::hash_checkpoint(request.parts);
    auto job = [request = std::move(request), hashed = std::move(hashed),
                keep = options_.history](detail::SqliteConnection& connection) {
      return detail::store::commit(connection, request, hashed, keep);
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

  /// Revision `revision` of the session, from its history, read as
  /// load_snapshot reads the head (head.updated_at is when that revision
  /// was committed). std::nullopt when the history does not hold it
  /// (StoreOptions::history keeps the last ones only).
  asio::awaitable<std::optional<SessionSnapshot>> load_revision(std::string session_id, std::uint64_t revision) {
    auto job = [session_id = std::move(session_id), revision](detail::SqliteConnection& connection) {
      return detail::store::load_revision(connection, session_id, revision);
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// The session's history, newest first, a page at a time: revision,
  /// checkpoint, parent and metadata of each checkpoint it keeps.
  asio::awaitable<Page<CheckpointInfo>> history(std::string session_id, PageRequest page) {
    detail::store::require_page(page, "SessionStore::history");
    auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
      return detail::store::history(connection, session_id, page);
    };
    auto listing = database_.run(std::move(job));
    co_return co_await std::move(listing);
  }

  /// Starts session `new_session_id` at revision 1 on the checkpoint of
  /// `session_id`'s revision `revision`, atomically; its history names that
  /// revision as its parent. The checkpoint is shared, not copied; the
  /// graph and the work queue are not forked. errc::invalid_argument when
  /// the history does not hold the revision, errc::head_revision_conflict
  /// when the new session exists.
  asio::awaitable<CommitResult> fork(std::string session_id, std::uint64_t revision, std::string new_session_id,
                                     std::optional<std::string> metadata) {
    database_.require_writable("SessionStore::fork");
    auto job = [session_id = std::move(session_id), revision, new_session_id = std::move(new_session_id),
                metadata = std::move(metadata), keep = options_.history](detail::SqliteConnection& connection) {
      return detail::store::fork(connection, session_id, revision, new_session_id, metadata, keep);
    };
    auto forking = database_.run(std::move(job));
    co_return co_await std::move(forking);
  }

  /// Deletes the session: head, history, graph, work items and claims, in
  /// one transaction. Its blobs are left to gc() (after the grace period).
  /// False for a session that had none of these.
  asio::awaitable<bool> delete_session(std::string session_id) {
    database_.require_writable("SessionStore::delete_session");
    detail::store::require_id("session id", session_id);
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      const bool found = detail::store::delete_session(connection, session_id);
      transaction.commit();
      return found;
    };
    auto deleting = database_.run(std::move(job));
    co_return co_await std::move(deleting);
  }

  /// Deletes, as delete_session does, every session whose head has not
  /// moved for longer than `idle` and that no live claim is working on;
  /// returns how many. Only commits (and fork) count as activity: a session
  /// that only enqueues goes too, pending items included. A session with
  /// no head (only a graph or a queue) is never idle: delete_session it.
  /// Works in transactions of at most 64 sessions. StoreOptions::retention
  /// makes gc() do this.
  asio::awaitable<std::size_t> delete_idle_sessions(std::chrono::milliseconds idle) {
    database_.require_writable("SessionStore::delete_idle_sessions");
    if (idle <= std::chrono::milliseconds::zero())
      throw Error(errc::invalid_argument,
                  fmt::format("SessionStore::delete_idle_sessions: idle must be positive, got {} ms", idle.count()));
    const auto cutoff = detail::wall_clock_ms() - idle.count();
    std::size_t deleted = 0;
    for (;;) {
      auto batching = database_.run([cutoff](detail::SqliteConnection& connection) {
        return detail::store::delete_idle_sessions(connection, cutoff, idle_batch_sessions);
      });
      const auto batch = co_await std::move(batching);
      deleted += batch;
      if (batch < idle_batch_sessions) break;
    }
    co_return deleted;
  }

  static constexpr std::size_t idle_batch_sessions = 64;

  /// The session's head, or std::nullopt for a session never committed.
  asio::awaitable<std::optional<SessionHead>> load(std::string session_id) {
    auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) -> std::optional<SessionHead> {
      auto statement = connection.prepare(detail::store::sql::head);
      statement.bind(1, session_id);
      if (!statement.step()) return std::nullopt;
      return detail::store::read_head(statement, session_id);
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// Every session's head, ordered by session id.
  asio::awaitable<std::vector<SessionHead>> sessions() {
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      return detail::store::all_pages(connection, [&](const PageRequest& page) {
        return detail::store::sessions(connection, page);
      });
    });
  }

  /// A page of the sessions' heads, ordered by session id.
  asio::awaitable<Page<SessionHead>> sessions(PageRequest page) {
    detail::store::require_page(page, "SessionStore::sessions");
    auto job = [page = std::move(page)](detail::SqliteConnection& connection) {
      return detail::store::sessions(connection, page);
    };
    auto listing = database_.run(std::move(job));
    co_return co_await std::move(listing);
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
    BlobRef hashed{detail::sha256_hex(bytes)};  // on the caller's thread, as commit() does
    auto job = [bytes = std::move(bytes), hashed = std::move(hashed)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);  // stored, counted and queued together, or not at all
      auto ref = detail::store::put_blob(connection, hashed, bytes);
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
      // The row is found, then read through a blob handle: one snapshot, so
      // a gc on another connection cannot delete it (or reuse its rowid) in between.
      auto transaction = detail::Transaction::read(connection);
      auto bytes = detail::store::get_blob(connection, ref);
      transaction.commit();
      return bytes;
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
  /// so gc() reads only the queue of blobs that lost their last one: its
  /// cost follows the garbage, not the store. With nothing due it reads one
  /// row; otherwise it reads the queue once, in hash order (the blobs still
  /// waiting out their grace period too), and deletes what is due, at a
  /// cost per blob that does not grow with the store (benchmarks/README).
  /// It works in batches of one short write
  /// transaction each (a few milliseconds), so locks and commits of every
  /// process go on in between. Reads no blob's bytes: a damaged blob does
  /// not stop it.
  ///
  /// With StoreOptions::retention it first deletes the sessions idle longer
  /// than that. When the WAL has grown past truncate_wal_above (it grows by
  /// what was deleted) it is truncated, if no other connection is using
  /// the file then; the
  /// database file itself keeps its size (SQLite reuses the free pages):
  /// compact() gives the space back to the file system.
  asio::awaitable<GcReport> gc() {
    database_.require_writable("SessionStore::gc");
    if (options_.retention) {
      auto expiring = delete_idle_sessions(*options_.retention);
      co_await std::move(expiring);
    }
    const auto cutoff = detail::wall_clock_ms() - options_.gc_grace.count();
    // A manifest's parts, and blobs stored by versions before hash-ordered
    // ids, are looked up in random order: a 64 MB page cache for the
    // collection keeps those pages between batches (with SQLite's default
    // 2 MB the cost per blob grew with the store).
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
      auto reading = database_.run([](detail::SqliteConnection& c) { return detail::store::gc_next_due(c); });
      const auto next_due_at_start = co_await std::move(reading);
      // Nothing due yet: one row read. Otherwise one pass over the queue in
      // hash order; it also finds when the earliest entry it leaves is due.
      if (next_due_at_start <= cutoff) {
        auto beginning = database_.run([](detail::SqliteConnection& c) { return detail::store::gc_begin_pass(c); });
        const auto epoch = co_await std::move(beginning);
        std::string cursor;
        std::int64_t next_due = std::numeric_limits<std::int64_t>::max();
        std::size_t batches_written = 0;
        for (;;) {
          auto batching = database_.run([cutoff, cursor](detail::SqliteConnection& connection) {
            return detail::store::gc_batch(connection, cutoff, cursor, gc_batch_blobs, gc_batch_budget);
          });
          const auto batch = co_await std::move(batching);
          deleted += batch.deleted;
          next_due = std::min(next_due, batch.next_due_ms);
          cursor = batch.last;
          if (!batch.more) break;
          if (!batch.wrote) continue;
          if (++batches_written % gc_checkpoint_every == 0) {
            // The collection copies its own pages out of the WAL, before it
            // reaches SQLite's automatic checkpoint (1000 pages) that the
            // commit crossing it runs: a lock operation of another
            // connection, kept 20-30 ms doing GC's copying.
            auto checkpointing = database_.run([](detail::SqliteConnection& c) { c.checkpoint_wal(); });
            co_await std::move(checkpointing);
          }
          // SQLite's write lock is not fair: a writer that sleeps in its
          // busy handler may wake to find the next batch holding the lock,
          // and lose to GC batch after batch (a lock operation waited
          // 90-120 ms behind GC of 10^6 blobs without this pause).
          asio::steady_timer pause(co_await asio::this_coro::executor, gc_batch_pause);
          co_await pause.async_wait(asio::use_awaitable);
        }
        auto finishing = database_.run([epoch, next_due](detail::SqliteConnection& connection) {
          detail::store::gc_pass_done(connection, epoch, next_due);
        });
        co_await std::move(finishing);
      }
    } catch (...) {
      database_.post(restore_cache);
      throw;
    }
    database_.post(restore_cache);
    co_return co_await database_.run([deleted](detail::SqliteConnection& connection) {
      std::error_code unknown;
      const auto wal = std::filesystem::file_size(connection.path().string() + "-wal", unknown);
      if (deleted > 0 && !unknown && wal > truncate_wal_above) connection.truncate_wal();
      return detail::store::gc_report(connection, deleted);
    });
  }

  /// gc() truncates a WAL larger than this.
  static constexpr std::uintmax_t truncate_wal_above = 16u << 20;

  /// Gives the free space of the file back to the file system: rewrites the
  /// database (SQLite's VACUUM) and truncates the WAL. Returns the bytes the
  /// database shrank by; the file itself shrinks once the WAL is checkpointed,
  /// at once unless another connection is reading (a warning says so). It
  /// holds the file's write lock for as long as rewriting
  /// takes (about a second per few hundred MB): every lock and store
  /// operation of every process on the file waits meanwhile, so run it as
  /// maintenance, not on a schedule under load. Deleting nothing itself,
  /// it reclaims what gc(), delete_session and vacuum() freed.
  asio::awaitable<std::uint64_t> compact() {
    database_.require_writable("SessionStore::compact");
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      const auto size = [&] { return connection.pragma_int("page_count") * connection.pragma_int("page_size"); };
      const auto before = size();
      connection.exec("VACUUM");
      if (!connection.truncate_wal())
        detail::log(LogLevel::warning,
                    fmt::format("SessionStore::compact: '{}' was rewritten, but another connection is using it: the "
                                "file shrinks at a later checkpoint",
                                connection.path().string()));
      const auto after = size();
      return static_cast<std::uint64_t>(std::max<std::int64_t>(before - after, 0));
    });
  }

  /// At most this many queued blobs, and this much time, per GC batch.
  static constexpr std::size_t gc_batch_blobs = 512;
  static constexpr std::chrono::microseconds gc_batch_budget{8000};
  // Between batches: longer than any sleep of a busy writer, so a writer
  // waiting when a batch ends usually gets the lock before the next batch.
  static constexpr std::chrono::microseconds gc_batch_pause{2000};
  static_assert(gc_batch_pause > detail::SqliteConnection::longest_busy_sleep);
  // GC checkpoints the WAL itself every few batches: a WAL grown by a long
  // GC makes every lock operation behind it slower (benchmarks/README.md).
  static constexpr std::size_t gc_checkpoint_every = 8;

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
      return detail::store::all_pages(connection, [&](const PageRequest& page) {
        return detail::store::pending(connection, session_id, page);
      });
    };
    auto listing = database_.run(std::move(job));
    co_return co_await std::move(listing);
  }

  /// A page of pending(session_id).
  asio::awaitable<Page<WorkItem>> pending(std::string session_id, PageRequest page) {
    detail::store::require_page(page, "SessionStore::pending");
    auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
      return detail::store::pending(connection, session_id, page);
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
      return detail::store::all_pages(connection, [&](const PageRequest& page) {
        return detail::store::load_graph(connection, session_id, page);
      });
    };
    auto loading = database_.run(std::move(job));
    co_return co_await std::move(loading);
  }

  /// A page of load_graph(session_id).
  asio::awaitable<Page<GraphNode>> load_graph(std::string session_id, PageRequest page) {
    detail::store::require_page(page, "SessionStore::load_graph");
    auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
      return detail::store::load_graph(connection, session_id, page);
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
