// Helpers shared by the SessionStore tests.
#pragma once

#include <lockstore/store.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <optional>
#include <string>

namespace lockstore::test {

inline asio::awaitable<SessionStore> open_store(std::filesystem::path path, StoreOptions options = {}) {
  auto database = co_await SqliteDatabase::open(std::move(path));
  co_return co_await SessionStore::open(database, options);
}

/// What is wrong with the file's GC bookkeeping, "" when nothing: every
/// blob's reference count equals the heads, pins, manifests and history
/// rows naming it;
/// every unreferenced blob waits in the GC queue (else it would never be
/// collected), none of them since before the queue's bound; the blob
/// counter equals the number of blobs.
inline asio::awaitable<std::string> gc_bookkeeping_errors(SessionStore& store) {
  auto checking = detail::run_on(store.database(), [](detail::SqliteConnection& connection) {
    auto count = [&](const char* sql) {
      auto statement = connection.prepare(sql);
      statement.step();
      return statement.int64(0);
    };
    static constexpr const char* miscounted = R"sql(
SELECT COUNT(*) FROM lockstore_blobs b WHERE b.refs !=
    (SELECT COUNT(*) FROM lockstore_sessions s WHERE s.checkpoint_hash = b.hash)
  + COALESCE((SELECT p.count FROM lockstore_pins p WHERE p.hash = b.hash AND p.count > 0), 0)
  + (SELECT COUNT(*) FROM lockstore_blob_parts bp WHERE bp.part_hash = b.hash)
  + (SELECT COUNT(*) FROM lockstore_checkpoints c WHERE c.checkpoint_hash = b.hash))sql";
    static constexpr const char* unqueued = R"sql(
SELECT COUNT(*) FROM lockstore_blobs b
WHERE b.refs <= 0 AND NOT EXISTS (SELECT 1 FROM lockstore_gc_queue q WHERE q.hash = b.hash))sql";
    // An entry due before the bound would never be collected: gc() skips
    // the queue until the bound is due.
    static constexpr const char* below_bound = R"sql(
SELECT COUNT(*) FROM lockstore_gc_queue
WHERE since_ms < (SELECT value FROM lockstore_counters WHERE name = 'gc_next_due_ms'))sql";
    static constexpr const char* counter_drift = R"sql(
SELECT (SELECT value FROM lockstore_counters WHERE name = 'blobs') - (SELECT COUNT(*) FROM lockstore_blobs))sql";
    std::string errors;
    if (const auto n = count(miscounted)) errors += fmt::format("{} blobs with a wrong reference count; ", n);
    if (const auto n = count(unqueued)) errors += fmt::format("{} unreferenced blobs not queued for collection; ", n);
    if (const auto n = count(counter_drift)) errors += fmt::format("blob counter off by {}; ", n);
    if (const auto n = count(below_bound))
      errors += fmt::format("{} queued blobs due before gc_next_due_ms (never collected); ", n);
    return errors;
  });
  co_return co_await std::move(checking);
}

/// The lockstore::Error that awaiting `make()` throws, or std::nullopt.
template <class F>
asio::awaitable<std::optional<Error>> error_of(F make) {
  try {
    auto operation = make();
    co_await std::move(operation);
  } catch (const Error& error) {
    co_return error;
  }
  co_return std::nullopt;
}

/// A commit of one part named "state".
inline CommitRequest request_for(std::string session, std::uint64_t expected, std::string state) {
  CommitRequest request;
  request.session_id = std::move(session);
  request.expected_head_revision = expected;
  request.parts.emplace("state", std::move(state));
  return request;
}

}  // namespace lockstore::test
