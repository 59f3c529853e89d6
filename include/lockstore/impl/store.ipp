// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SessionStore's definitions (see store.hpp; detail/config.hpp for the
// separately compiled mode).
#pragma once

#include "lockstore/store.hpp"

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_database_run.hpp"
#include "lockstore/detail/sqlite_schema.hpp"
#include "lockstore/detail/store_ops.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <filesystem>
#include <limits>

namespace lockstore {

static_assert(SessionStore::gc_batch_pause > detail::SqliteConnection::longest_busy_sleep);

struct SessionStore::State {
  std::atomic<std::uint64_t> commits{0};
};

LOCKSTORE_DECL auto SessionStore::open(SqliteDatabase database, StoreOptions options) -> asio::awaitable<SessionStore> {
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
  co_await detail::run_on(database,
                          [](detail::SqliteConnection& connection) { detail::check_store_schema(connection); });
  co_return SessionStore(std::move(database), options);
}

LOCKSTORE_DECL auto SessionStore::database() const noexcept -> const SqliteDatabase& { return database_; }

LOCKSTORE_DECL auto SessionStore::commit(CommitRequest request) -> asio::awaitable<CommitResult> {
  database_.require_writable("SessionStore::commit");
  const std::string session = request.session_id;
  auto hashed = detail::store::hash_checkpoint(request.parts);
  auto job = [request = std::move(request), hashed = std::move(hashed),
              keep = options_.history](detail::SqliteConnection& connection) {
    return detail::store::commit(connection, request, hashed, keep);
  };
  auto committing = detail::run_on(database_, std::move(job));
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

LOCKSTORE_DECL auto SessionStore::load_snapshot(std::string session_id)
    -> asio::awaitable<std::optional<SessionSnapshot>> {
  auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
    return detail::store::load_snapshot(connection, session_id);
  };
  auto loading = detail::run_on(database_, std::move(job));
  co_return co_await std::move(loading);
}

LOCKSTORE_DECL auto SessionStore::load_revision(std::string session_id, std::uint64_t revision)
    -> asio::awaitable<std::optional<SessionSnapshot>> {
  auto job = [session_id = std::move(session_id), revision](detail::SqliteConnection& connection) {
    return detail::store::load_revision(connection, session_id, revision);
  };
  auto loading = detail::run_on(database_, std::move(job));
  co_return co_await std::move(loading);
}

LOCKSTORE_DECL auto SessionStore::history(std::string session_id, PageRequest page)
    -> asio::awaitable<Page<CheckpointInfo>> {
  detail::store::require_page(page, "SessionStore::history");
  auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
    return detail::store::history(connection, session_id, page);
  };
  auto listing = detail::run_on(database_, std::move(job));
  co_return co_await std::move(listing);
}

LOCKSTORE_DECL auto SessionStore::fork(std::string session_id, std::uint64_t revision, std::string new_session_id,
                                   std::optional<std::string> metadata) -> asio::awaitable<CommitResult> {
  database_.require_writable("SessionStore::fork");
  auto job = [session_id = std::move(session_id), revision, new_session_id = std::move(new_session_id),
              metadata = std::move(metadata), keep = options_.history](detail::SqliteConnection& connection) {
    return detail::store::fork(connection, session_id, revision, new_session_id, metadata, keep);
  };
  auto forking = detail::run_on(database_, std::move(job));
  co_return co_await std::move(forking);
}

LOCKSTORE_DECL auto SessionStore::delete_session(std::string session_id) -> asio::awaitable<bool> {
  database_.require_writable("SessionStore::delete_session");
  detail::store::require_id("session id", session_id);
  auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    const bool found = detail::store::delete_session(connection, session_id);
    transaction.commit();
    return found;
  };
  auto deleting = detail::run_on(database_, std::move(job));
  co_return co_await std::move(deleting);
}

LOCKSTORE_DECL auto SessionStore::delete_idle_sessions(std::chrono::milliseconds idle) -> asio::awaitable<std::size_t> {
  database_.require_writable("SessionStore::delete_idle_sessions");
  if (idle <= std::chrono::milliseconds::zero())
    throw Error(errc::invalid_argument,
                fmt::format("SessionStore::delete_idle_sessions: idle must be positive, got {} ms", idle.count()));
  const auto cutoff = detail::wall_clock_ms() - idle.count();
  std::size_t deleted = 0;
  for (;;) {
    auto batching = detail::run_on(database_, [cutoff](detail::SqliteConnection& connection) {
      return detail::store::delete_idle_sessions(connection, cutoff, idle_batch_sessions);
    });
    const auto batch = co_await std::move(batching);
    deleted += batch;
    if (batch < idle_batch_sessions) break;
  }
  co_return deleted;
}

LOCKSTORE_DECL auto SessionStore::load(std::string session_id) -> asio::awaitable<std::optional<SessionHead>> {
  auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) -> std::optional<SessionHead> {
    auto statement = connection.prepare(detail::store::sql::head);
    statement.bind(1, session_id);
    if (!statement.step()) return std::nullopt;
    return detail::store::read_head(statement, session_id);
  };
  auto loading = detail::run_on(database_, std::move(job));
  co_return co_await std::move(loading);
}

LOCKSTORE_DECL auto SessionStore::sessions() -> asio::awaitable<std::vector<SessionHead>> {
  co_return co_await detail::run_on(database_, [](detail::SqliteConnection& connection) {
    return detail::store::all_pages(connection, [&](const PageRequest& page) {
      return detail::store::sessions(connection, page);
    });
  });
}

LOCKSTORE_DECL auto SessionStore::sessions(PageRequest page) -> asio::awaitable<Page<SessionHead>> {
  detail::store::require_page(page, "SessionStore::sessions");
  auto job = [page = std::move(page)](detail::SqliteConnection& connection) {
    return detail::store::sessions(connection, page);
  };
  auto listing = detail::run_on(database_, std::move(job));
  co_return co_await std::move(listing);
}

LOCKSTORE_DECL auto SessionStore::stats() -> asio::awaitable<StoreStats> {
  co_return co_await detail::run_on(database_, [](detail::SqliteConnection& connection) {
    auto statement = connection.prepare(detail::store::sql::stats);
    statement.step();
    return StoreStats{static_cast<std::size_t>(statement.int64(0)), static_cast<std::size_t>(statement.int64(1)),
                      static_cast<std::size_t>(statement.int64(2)), static_cast<std::uint64_t>(statement.int64(3))};
  });
}

LOCKSTORE_DECL auto SessionStore::put_blob(std::string bytes) -> asio::awaitable<BlobRef> {
  database_.require_writable("SessionStore::put_blob");
  BlobRef hashed{detail::sha256_hex(bytes)};  // on the caller's thread, as commit() does
  auto job = [bytes = std::move(bytes), hashed = std::move(hashed)](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);  // stored, counted and queued together, or not at all
    auto ref = detail::store::put_blob(connection, hashed, bytes);
    transaction.commit();
    return ref;
  };
  auto putting = detail::run_on(database_, std::move(job));
  co_return co_await std::move(putting);
}

LOCKSTORE_DECL auto SessionStore::get_blob(BlobRef ref) -> asio::awaitable<std::optional<std::string>> {
  detail::store::require_ref(ref);
  auto job = [ref = std::move(ref)](detail::SqliteConnection& connection) {
    // The row is found, then read through a blob handle: one snapshot, so
    // a gc on another connection cannot delete it (or reuse its rowid) in between.
    auto transaction = detail::Transaction::read(connection);
    auto bytes = detail::store::get_blob(connection, ref);
    transaction.commit();
    return bytes;
  };
  auto getting = detail::run_on(database_, std::move(job));
  co_return co_await std::move(getting);
}

LOCKSTORE_DECL auto SessionStore::get_checkpoint(BlobRef ref) -> asio::awaitable<std::optional<Checkpoint>> {
  auto getting = get_blob(std::move(ref));
  auto bytes = co_await std::move(getting);
  if (!bytes) co_return std::nullopt;
  co_return detail::decode_manifest(*bytes);
}

LOCKSTORE_DECL auto SessionStore::pin(BlobRef ref) -> asio::awaitable<void> {
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
  auto pinning = detail::run_on(database_, std::move(job));
  co_await std::move(pinning);
}

LOCKSTORE_DECL auto SessionStore::unpin(BlobRef ref) -> asio::awaitable<void> {
  database_.require_writable("SessionStore::unpin");
  detail::store::require_ref(ref);
  auto job = [ref = std::move(ref)](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    if (connection.prepare(detail::store::sql::unpin).bind(1, ref.hash).run() == 1)
      detail::store::drop_ref(connection, ref.hash, detail::wall_clock_ms());
    connection.prepare(detail::store::sql::drop_unpinned).bind(1, ref.hash).run();
    transaction.commit();
  };
  auto unpinning = detail::run_on(database_, std::move(job));
  co_await std::move(unpinning);
}

LOCKSTORE_DECL auto SessionStore::gc() -> asio::awaitable<GcReport> {
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
  auto widening = detail::run_on(database_, [](detail::SqliteConnection& connection) {
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
    auto reading = detail::run_on(database_, [](detail::SqliteConnection& c) { return detail::store::gc_next_due(c); });
    const auto next_due_at_start = co_await std::move(reading);
    // Nothing due yet: one row read. Otherwise one pass over the queue in
    // hash order; it also finds when the earliest entry it leaves is due.
    if (next_due_at_start <= cutoff) {
      auto beginning =
          detail::run_on(database_, [](detail::SqliteConnection& c) { return detail::store::gc_begin_pass(c); });
      const auto epoch = co_await std::move(beginning);
      std::string cursor;
      std::int64_t next_due = std::numeric_limits<std::int64_t>::max();
      std::size_t batches_written = 0;
      for (;;) {
        auto batching = detail::run_on(database_, [cutoff, cursor](detail::SqliteConnection& connection) {
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
          auto checkpointing = detail::run_on(database_, [](detail::SqliteConnection& c) { c.checkpoint_wal(); });
          co_await std::move(checkpointing);
        }
        // SQLite's write lock is not fair: a writer that sleeps in its
        // busy handler may wake to find the next batch holding the lock,
        // and lose to GC batch after batch (a lock operation waited
        // 90-120 ms behind GC of 10^6 blobs without this pause).
        asio::steady_timer pause(co_await asio::this_coro::executor, gc_batch_pause);
        co_await pause.async_wait(asio::use_awaitable);
      }
      auto finishing = detail::run_on(database_, [epoch, next_due](detail::SqliteConnection& connection) {
        detail::store::gc_pass_done(connection, epoch, next_due);
      });
      co_await std::move(finishing);
    }
  } catch (...) {
    detail::post_on(database_, restore_cache);
    throw;
  }
  detail::post_on(database_, restore_cache);
  co_return co_await detail::run_on(database_, [deleted](detail::SqliteConnection& connection) {
    std::error_code unknown;
    const auto wal = std::filesystem::file_size(connection.path().string() + "-wal", unknown);
    if (deleted > 0 && !unknown && wal > truncate_wal_above) connection.truncate_wal();
    return detail::store::gc_report(connection, deleted);
  });
}

LOCKSTORE_DECL auto SessionStore::gc_dry_run() -> asio::awaitable<GcReport> {
  const auto cutoff = detail::wall_clock_ms() - options_.gc_grace.count();
  co_return co_await detail::run_on(
      database_, [cutoff](detail::SqliteConnection& connection) { return detail::store::gc_preview(connection, cutoff); });
}

LOCKSTORE_DECL auto SessionStore::compact() -> asio::awaitable<std::uint64_t> {
  database_.require_writable("SessionStore::compact");
  co_return co_await detail::run_on(database_, [](detail::SqliteConnection& connection) {
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

LOCKSTORE_DECL auto SessionStore::enqueue(std::string session_id, WorkDraft draft) -> asio::awaitable<WorkItem> {
  database_.require_writable("SessionStore::enqueue");
  detail::store::require_id("session id", session_id);
  auto job = [session_id = std::move(session_id), draft = std::move(draft)](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    auto item = detail::store::enqueue(connection, session_id, draft);
    transaction.commit();
    return item;
  };
  auto enqueueing = detail::run_on(database_, std::move(job));
  co_return co_await std::move(enqueueing);
}

LOCKSTORE_DECL auto SessionStore::claim(std::string session_id, std::string owner,
                                            std::chrono::milliseconds lease, std::size_t max_items)
    -> asio::awaitable<std::optional<Claim>> {
  database_.require_writable("SessionStore::claim");
  detail::store::require_id("session id", session_id);
  detail::store::require_id("claim owner", owner);
  detail::validate_ttl(lease, "SessionStore::claim");
  if (max_items == 0) throw Error(errc::invalid_argument, "SessionStore::claim: max_items must be at least 1");
  auto job = [session_id = std::move(session_id), owner = std::move(owner), lease, max_items](
                 detail::SqliteConnection& connection) {
    return detail::store::claim(connection, session_id, owner, lease, max_items);
  };
  auto claiming = detail::run_on(database_, std::move(job));
  co_return co_await std::move(claiming);
}

LOCKSTORE_DECL auto SessionStore::renew(const Claim& claim, std::chrono::milliseconds lease) -> asio::awaitable<void> {
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
  auto renewing = detail::run_on(database_, std::move(job));
  co_await std::move(renewing);
}

LOCKSTORE_DECL auto SessionStore::complete(const Claim& claim) -> asio::awaitable<void> {
  database_.require_writable("SessionStore::complete");
  auto job = [claim](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    detail::store::complete_claim(connection, claim);
    transaction.commit();
  };
  auto completing = detail::run_on(database_, std::move(job));
  co_await std::move(completing);
}

LOCKSTORE_DECL auto SessionStore::abandon(const Claim& claim) -> asio::awaitable<void> {
  database_.require_writable("SessionStore::abandon");
  auto job = [token = claim.token](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    connection.prepare(detail::store::sql::abandon_duplicates).bind(1, token).run();
    connection.prepare(detail::store::sql::abandon_items).bind(1, token).run();
    connection.prepare(detail::store::sql::drop_claim).bind(1, token).run();
    transaction.commit();
  };
  auto abandoning = detail::run_on(database_, std::move(job));
  co_await std::move(abandoning);
}

LOCKSTORE_DECL auto SessionStore::pending(std::string session_id) -> asio::awaitable<std::vector<WorkItem>> {
  auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
    return detail::store::all_pages(connection, [&](const PageRequest& page) {
      return detail::store::pending(connection, session_id, page);
    });
  };
  auto listing = detail::run_on(database_, std::move(job));
  co_return co_await std::move(listing);
}

LOCKSTORE_DECL auto SessionStore::pending(std::string session_id, PageRequest page) -> asio::awaitable<Page<WorkItem>> {
  detail::store::require_page(page, "SessionStore::pending");
  auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
    return detail::store::pending(connection, session_id, page);
  };
  auto listing = detail::run_on(database_, std::move(job));
  co_return co_await std::move(listing);
}

LOCKSTORE_DECL auto SessionStore::append_nodes(std::string session_id, std::vector<GraphNode> nodes)
    -> asio::awaitable<void> {
  database_.require_writable("SessionStore::append_nodes");
  detail::store::require_id("session id", session_id);
  auto job = [session_id = std::move(session_id), nodes = std::move(nodes)](detail::SqliteConnection& connection) {
    detail::Transaction transaction(connection);
    detail::store::append_nodes(connection, session_id, nodes);
    transaction.commit();
  };
  auto appending = detail::run_on(database_, std::move(job));
  co_await std::move(appending);
}

LOCKSTORE_DECL auto SessionStore::load_graph(std::string session_id) -> asio::awaitable<std::vector<GraphNode>> {
  auto job = [session_id = std::move(session_id)](detail::SqliteConnection& connection) {
    return detail::store::all_pages(connection, [&](const PageRequest& page) {
      return detail::store::load_graph(connection, session_id, page);
    });
  };
  auto loading = detail::run_on(database_, std::move(job));
  co_return co_await std::move(loading);
}

LOCKSTORE_DECL auto SessionStore::load_graph(std::string session_id, PageRequest page)
    -> asio::awaitable<Page<GraphNode>> {
  detail::store::require_page(page, "SessionStore::load_graph");
  auto job = [session_id = std::move(session_id), page = std::move(page)](detail::SqliteConnection& connection) {
    return detail::store::load_graph(connection, session_id, page);
  };
  auto loading = detail::run_on(database_, std::move(job));
  co_return co_await std::move(loading);
}

LOCKSTORE_DECL auto SessionStore::active_path(std::string session_id, std::string leaf_id)
    -> asio::awaitable<std::vector<GraphNode>> {
  auto job = [session_id = std::move(session_id), leaf_id = std::move(leaf_id)](detail::SqliteConnection& connection) {
    return detail::store::active_path(connection, session_id, leaf_id);
  };
  auto walking = detail::run_on(database_, std::move(job));
  co_return co_await std::move(walking);
}

LOCKSTORE_DECL auto SessionStore::tombstone(std::string session_id, std::vector<std::string> node_ids)
    -> asio::awaitable<std::size_t> {
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
  auto hiding = detail::run_on(database_, std::move(job));
  co_return co_await std::move(hiding);
}

LOCKSTORE_DECL auto SessionStore::vacuum() -> asio::awaitable<std::size_t> {
  database_.require_writable("SessionStore::vacuum");
  co_return co_await detail::run_on(database_, [](detail::SqliteConnection& connection) {
    return static_cast<std::size_t>(connection.prepare(detail::store::sql::vacuum).run());
  });
}

LOCKSTORE_DECL SessionStore::SessionStore(SqliteDatabase database, StoreOptions options)
  : database_(std::move(database)), options_(options), state_(std::make_shared<State>()) {}

}  // namespace lockstore
