// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Completion tokens for the SessionStore's operations, as completion.hpp
// gives them to the locks: each operation is written once as a coroutine,
// and these overloads let it complete through any Asio completion token with
// `void(error_code, T)` (`void(error_code)` for the operations returning
// nothing), the value empty on failure. The store must outlive the
// operation; a Claim is copied, so the caller's may go.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/store_types.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lockstore::detail {

template <class Store>
class StoreCompletionOverloads {
 public:
  using error_code = boost::system::error_code;
  using milliseconds = std::chrono::milliseconds;

  /// SessionStore::open through a token: `void(error_code,
  /// std::optional<SessionStore>)`, empty on failure.
  template <class Database, asio::completion_token_for<void(error_code, std::optional<Store>)> Token>
  static auto open(Database database, StoreOptions options, Token&& token) {
    return complete_through(open_optional(std::move(database), std::move(options)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, CommitResult)> Token>
  auto commit(CommitRequest request, Token&& token) {
    return complete_through(self().commit(std::move(request)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<SessionSnapshot>)> Token>
  auto load_snapshot(std::string session_id, Token&& token) {
    return complete_through(self().load_snapshot(std::move(session_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<SessionSnapshot>)> Token>
  auto load_revision(std::string session_id, std::uint64_t revision, Token&& token) {
    return complete_through(self().load_revision(std::move(session_id), revision), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, Page<CheckpointInfo>)> Token>
  auto history(std::string session_id, PageRequest page, Token&& token) {
    return complete_through(self().history(std::move(session_id), std::move(page)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, CommitResult)> Token>
  auto fork(std::string session_id, std::uint64_t revision, std::string new_session_id,
            std::optional<std::string> metadata, Token&& token) {
    return complete_through(
        self().fork(std::move(session_id), revision, std::move(new_session_id), std::move(metadata)),
        std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, bool)> Token>
  auto delete_session(std::string session_id, Token&& token) {
    return complete_through(self().delete_session(std::move(session_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::size_t)> Token>
  auto delete_idle_sessions(milliseconds idle, Token&& token) {
    return complete_through(self().delete_idle_sessions(idle), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<SessionHead>)> Token>
  auto load(std::string session_id, Token&& token) {
    return complete_through(self().load(std::move(session_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::vector<SessionHead>)> Token>
  auto sessions(Token&& token) {
    return complete_through(self().sessions(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, Page<SessionHead>)> Token>
  auto sessions(PageRequest page, Token&& token) {
    return complete_through(self().sessions(std::move(page)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, StoreStats)> Token>
  auto stats(Token&& token) {
    return complete_through(self().stats(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, BlobRef)> Token>
  auto put_blob(std::string bytes, Token&& token) {
    return complete_through(self().put_blob(std::move(bytes)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<std::string>)> Token>
  auto get_blob(BlobRef ref, Token&& token) {
    return complete_through(self().get_blob(std::move(ref)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<Checkpoint>)> Token>
  auto get_checkpoint(BlobRef ref, Token&& token) {
    return complete_through(self().get_checkpoint(std::move(ref)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto pin(BlobRef ref, Token&& token) {
    return complete_through(self().pin(std::move(ref)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto unpin(BlobRef ref, Token&& token) {
    return complete_through(self().unpin(std::move(ref)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, GcReport)> Token>
  auto gc(Token&& token) {
    return complete_through(self().gc(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, GcReport)> Token>
  auto gc_dry_run(Token&& token) {
    return complete_through(self().gc_dry_run(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::uint64_t)> Token>
  auto compact(Token&& token) {
    return complete_through(self().compact(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, WorkItem)> Token>
  auto enqueue(std::string session_id, WorkDraft draft, Token&& token) {
    return complete_through(self().enqueue(std::move(session_id), std::move(draft)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<Claim>)> Token>
  auto claim(std::string session_id, std::string owner, milliseconds lease, std::size_t max_items, Token&& token) {
    return complete_through(self().claim(std::move(session_id), std::move(owner), lease, max_items),
                            std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto renew(Claim claim, milliseconds lease, Token&& token) {
    return complete_through(renew_owned(std::move(claim), lease), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto complete(Claim claim, Token&& token) {
    return complete_through(complete_owned(std::move(claim)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto abandon(Claim claim, Token&& token) {
    return complete_through(abandon_owned(std::move(claim)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::vector<WorkItem>)> Token>
  auto pending(std::string session_id, Token&& token) {
    return complete_through(self().pending(std::move(session_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, Page<WorkItem>)> Token>
  auto pending(std::string session_id, PageRequest page, Token&& token) {
    return complete_through(self().pending(std::move(session_id), std::move(page)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto append_nodes(std::string session_id, std::vector<GraphNode> nodes, Token&& token) {
    return complete_through(self().append_nodes(std::move(session_id), std::move(nodes)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::vector<GraphNode>)> Token>
  auto load_graph(std::string session_id, Token&& token) {
    return complete_through(self().load_graph(std::move(session_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, Page<GraphNode>)> Token>
  auto load_graph(std::string session_id, PageRequest page, Token&& token) {
    return complete_through(self().load_graph(std::move(session_id), std::move(page)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::vector<GraphNode>)> Token>
  auto active_path(std::string session_id, std::string leaf_id, Token&& token) {
    return complete_through(self().active_path(std::move(session_id), std::move(leaf_id)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::size_t)> Token>
  auto tombstone(std::string session_id, std::vector<std::string> node_ids, Token&& token) {
    return complete_through(self().tombstone(std::move(session_id), std::move(node_ids)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::size_t)> Token>
  auto vacuum(Token&& token) {
    return complete_through(self().vacuum(), std::forward<Token>(token));
  }

 private:
  Store& self() { return static_cast<Store&>(*this); }

  // The coroutine forms take the claim by reference; these own a copy,
  // since the operation may start after the caller's claim is gone.
  asio::awaitable<void> renew_owned(Claim claim, milliseconds lease) {
    auto renewing = self().renew(claim, lease);
    co_await std::move(renewing);
  }
  asio::awaitable<void> complete_owned(Claim claim) {
    auto completing = self().complete(claim);
    co_await std::move(completing);
  }
  asio::awaitable<void> abandon_owned(Claim claim) {
    auto abandoning = self().abandon(claim);
    co_await std::move(abandoning);
  }

  template <class Database>
  static asio::awaitable<std::optional<Store>> open_optional(Database database, StoreOptions options) {
    auto opening = Store::open(std::move(database), std::move(options));
    co_return co_await std::move(opening);
  }
};

}  // namespace lockstore::detail
