// Helpers shared by the SessionStore tests.
#pragma once

#include <lockstore/store.hpp>

#include <boost/asio.hpp>

#include <filesystem>
#include <string>

namespace lockstore::test {

inline asio::awaitable<SessionStore> open_store(std::filesystem::path path, StoreOptions options = {}) {
  auto database = co_await SqliteDatabase::open(std::move(path));
  co_return co_await SessionStore::open(database, options);
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
