// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Typed use of the SessionStore: a Codec turns a user's state type into
// bytes and back, and TypedSessionStore commits and loads that state as the
// checkpoint part named "state", so the user never handles bytes.
#pragma once

#include "lockstore/store.hpp"

#include <concepts>
#include <string>
#include <string_view>

namespace lockstore {

/// C::encode(const T&) -> bytes; C::decode(bytes) -> T, throwing
/// errc::corrupt_data on bytes it cannot decode.
template <class C, class T>
concept Codec = requires(const T& value, std::string_view bytes) {
  { C::encode(value) } -> std::convertible_to<std::string>;
  { C::decode(bytes) } -> std::same_as<T>;
};

/// The identity codec for std::string state.
struct StringCodec {
  static std::string encode(const std::string& value) { return value; }
  static std::string decode(std::string_view bytes) { return std::string(bytes); }
};

template <class T>
struct TypedHead {
  SessionHead head;
  T state;
};

template <class T, class C>
  requires Codec<C, T>
class TypedSessionStore {
 public:
  static constexpr std::string_view state_part = "state";

  explicit TypedSessionStore(SessionStore store) : store_(std::move(store)) {}

  SessionStore& untyped() noexcept { return store_; }

  /// Commits `state` as the new checkpoint. `request` may carry graph nodes,
  /// a claim to complete and work to enqueue; its parts are replaced.
  /// Not a coroutine: `state` is encoded before this returns, so a temporary
  /// passed as `state` may end with the call's full-expression.
  asio::awaitable<CommitResult> commit(CommitRequest request, const T& state) {
    request.parts.clear();
    request.parts.emplace(std::string(state_part), C::encode(state));
    return store_.commit(std::move(request));
  }

  /// The head and its decoded state, or std::nullopt for an unknown session.
  /// errc::corrupt_data if the checkpoint has no "state" part or the codec
  /// refuses its bytes.
  /// Head and state come from one snapshot of the file (load_snapshot).
  asio::awaitable<std::optional<TypedHead<T>>> load(std::string session_id) {
    auto loading = store_.load_snapshot(session_id);
    auto snapshot = co_await std::move(loading);
    if (!snapshot) co_return std::nullopt;
    const auto part = snapshot->parts.find(std::string(state_part));
    if (part == snapshot->parts.end())
      throw Error(errc::corrupt_data, fmt::format("session '{}' revision {} has no '{}' part", session_id,
                                                  snapshot->head.head_revision, state_part));
    co_return TypedHead<T>{std::move(snapshot->head), C::decode(part->second)};
  }

 private:
  SessionStore store_;
};

}  // namespace lockstore
