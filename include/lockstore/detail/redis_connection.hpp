// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// One Redis connection: commands are written in RESP here, hiredis parses
// the replies (its reply reader), Asio does the I/O on the caller's
// executor. A command and its reply are never cancelled half-way; only
// waiting for a pub/sub message is cancellable.
//
// Errors: a broken connection throws errc::connection_lost and is closed, so
// the owner can reconnect on its next operation. Error replies are returned
// as replies (RedisReply::error()) for the caller to interpret.
#pragma once

#include "lockstore/detail/async_mutex.hpp"
#include "lockstore/error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <array>
#include <charconv>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

/// An owned hiredis reply.
class RedisReply {
 public:
  RedisReply() = default;
  explicit RedisReply(redisReply* reply) : reply_(reply) {}

  const redisReply& operator*() const { return *reply_; }
  const redisReply* operator->() const { return reply_.get(); }
  const redisReply* get() const { return reply_.get(); }

  bool error() const { return reply_->type == REDIS_REPLY_ERROR; }
  bool nil() const { return reply_->type == REDIS_REPLY_NIL; }
  std::string_view text() const { return text_of(reply_.get()); }

  static std::string_view text_of(const redisReply* reply) {
    return reply->str != nullptr ? std::string_view(reply->str, reply->len) : std::string_view();
  }

 private:
  struct Deleter {
    void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
  };
  std::unique_ptr<redisReply, Deleter> reply_;
};

class RedisConnection {
 public:
  explicit RedisConnection(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  bool connected() const noexcept { return socket_.has_value(); }
  const std::string& endpoint() const noexcept { return endpoint_; }

  /// Resolves and connects within `timeout`; errc::backend_failure naming
  /// host and port when it cannot.
  asio::awaitable<void> connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
    close();
    endpoint_ = fmt::format("{}:{}", host, port);
    asio::ip::tcp::resolver resolver(executor_);
    asio::ip::tcp::socket socket(executor_);
    asio::steady_timer timer(executor_, timeout);
    const auto error = co_await connect_socket(resolver, socket, timer, host, port);
    if (error == asio::error::timed_out)
      throw Error(errc::backend_failure,
                  fmt::format("cannot connect to Redis at {}: no answer within {} ms", endpoint_, timeout.count()));
    if (error)
      throw Error(errc::backend_failure, fmt::format("cannot connect to Redis at {}: {}", endpoint_, error.message()));
    socket.set_option(asio::ip::tcp::no_delay(true));
    socket.non_blocking(true);  // send() writes directly and must never block the executor
    socket_.emplace(std::move(socket));
    reader_.reset(redisReaderCreate());
  }

  /// Sends one command and returns its reply.
  asio::awaitable<RedisReply> command(const std::vector<std::string_view>& arguments) {
    require_connected(arguments);
    co_await send(arguments);
    co_return co_await read_reply(false, arguments);
  }

  /// Waits for the next pushed message (pub/sub). Returns an empty reply
  /// when cancelled.
  asio::awaitable<RedisReply> next_message() {
    require_connected({});
    co_return co_await read_reply(true, {});
  }

  /// Closes the connection if `timeout` passes before disarm_deadline():
  /// the request waiting then fails with connection_lost, "no answer".
  void arm_deadline(std::chrono::milliseconds timeout) {
    deadline_.emplace(executor_, timeout);
    timed_out_ = false;
    deadline_->async_wait([this](boost::system::error_code error) {
      if (error) return;
      timed_out_ = true;
      if (socket_) {
        boost::system::error_code ignored;
        socket_->cancel(ignored);
        socket_->shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
      }
    });
    deadline_budget_ = timeout;
  }
  void disarm_deadline() {
    if (deadline_) deadline_->cancel();
  }

  void close() noexcept {
    if (socket_) {
      boost::system::error_code ignored;
      socket_->close(ignored);
      socket_.reset();
    }
    reader_.reset();
  }

 private:
  // Each step races the timer in a parallel group of plain operations: no
  // coroutine is spawned, so none of co_spawn's cancellation forwarding
  // (chriskohlhoff/asio#1332) is involved. asio::error::timed_out when the
  // timer fires first.
  asio::awaitable<boost::system::error_code> connect_socket(asio::ip::tcp::resolver& resolver,
                                                            asio::ip::tcp::socket& socket, asio::steady_timer& timer,
                                                            const std::string& host, std::uint16_t port) {
    auto [resolve_order, resolve_error, endpoints, resolve_timer_error] =
        co_await asio::experimental::make_parallel_group(
            resolver.async_resolve(host, std::to_string(port), asio::deferred), timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    if (resolve_order[0] == 1) co_return asio::error::timed_out;
    if (resolve_error) co_return resolve_error;
    auto [connect_order, connect_error, connected_to, connect_timer_error] =
        co_await asio::experimental::make_parallel_group(asio::async_connect(socket, endpoints, asio::deferred),
                                                         timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    if (connect_order[0] == 1) co_return asio::error::timed_out;
    co_return connect_error;
  }

  asio::awaitable<void> send(const std::vector<std::string_view>& arguments) {
    format(arguments);
    // A command nearly always fits the socket's send buffer: write it here
    // and now, and suspend only for what the kernel did not take. (An
    // awaited write that completes at once still goes through the
    // scheduler's queue: a suspension and an extra epoll_wait per command.)
    auto pending = asio::buffer(out_);
    boost::system::error_code error;
    pending += socket_->write_some(pending, error);
    if (error == asio::error::would_block || error == asio::error::try_again) error.clear();
    if (!error && pending.size() > 0) {
      std::size_t written = 0;
      std::tie(error, written) = co_await asio::async_write(*socket_, pending, uncancellable());
    }
    if (error) lost(arguments, error.message());
  }

  asio::awaitable<RedisReply> read_reply(bool cancellable, const std::vector<std::string_view>& arguments) {
    for (;;) {
      void* parsed = nullptr;
      if (redisReaderGetReply(reader_.get(), &parsed) != REDIS_OK)
        lost(arguments, fmt::format("unreadable reply ({})", reader_->errstr));
      if (parsed != nullptr) co_return RedisReply(static_cast<redisReply*>(parsed));
      boost::system::error_code error;
      std::size_t received = 0;
      if (cancellable) {
        std::tie(error, received) = co_await socket_->async_read_some(asio::buffer(buffer_), asio::as_tuple(asio::use_awaitable));
        if (error == asio::error::operation_aborted) co_return RedisReply();
      } else {
        std::tie(error, received) = co_await socket_->async_read_some(asio::buffer(buffer_), uncancellable());
      }
      if (error) lost(arguments, error == asio::error::eof ? "the server closed the connection" : error.message());
      redisReaderFeed(reader_.get(), buffer_.data(), received);
    }
  }

  // The command in RESP, the protocol's array of bulk strings, into out_
  // (kept, so a command costs no allocation once out_ has grown).
  void format(const std::vector<std::string_view>& arguments) {
    out_.clear();
    append_header('*', arguments.size());
    for (const auto argument : arguments) {
      append_header('$', argument.size());
      out_.append(argument);
      out_.append("\r\n");
    }
  }

  void append_header(char kind, std::size_t count) {
    std::array<char, 24> digits{};
    const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), count).ptr;
    out_.push_back(kind);
    out_.append(digits.data(), end);
    out_.append("\r\n");
  }

  void require_connected(const std::vector<std::string_view>& arguments) const {
    if (!socket_)
      throw Error(errc::connection_lost, fmt::format("not connected to Redis at {} (for {})", endpoint_,
                                                     arguments.empty() ? "a message" : arguments.front()));
  }

  [[noreturn]] void lost(const std::vector<std::string_view>& arguments, std::string why) {
    if (timed_out_) why = fmt::format("no answer within {} ms", deadline_budget_.count());
    close();
    throw Error(errc::connection_lost, fmt::format("lost the connection to Redis at {} during {}: {}", endpoint_,
                                                   arguments.empty() ? "a wait for messages" : arguments.front(), why));
  }

  struct ReaderDeleter {
    void operator()(redisReader* reader) const noexcept { redisReaderFree(reader); }
  };

  asio::any_io_executor executor_;
  std::optional<asio::ip::tcp::socket> socket_;
  std::unique_ptr<redisReader, ReaderDeleter> reader_;
  std::array<char, 16 * 1024> buffer_{};
  std::string out_;  // the command being sent
  std::string endpoint_ = "(not connected)";
  std::optional<asio::steady_timer> deadline_;
  bool timed_out_ = false;
  std::chrono::milliseconds deadline_budget_{0};
};

}  // namespace lockstore::detail
