// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// One libpq connection driven without blocking: libpq's non-blocking calls
// (PQconnectPoll, PQsendQueryParams, PQflush, PQconsumeInput, PQisBusy,
// PQgetResult) with the connection's socket watched by Asio on the caller's
// executor. Requests and their replies are never cancelled half-way: a
// connection in the middle of a reply cannot take the next request.
//
// Errors: a connection that breaks (server restart, pg_terminate_backend,
// network) throws errc::connection_lost and is closed, so the owner can
// reconnect on its next operation; a failed statement throws
// errc::backend_failure with the server's message and SQLSTATE.
#pragma once

#include "lockstore/detail/async_mutex.hpp"
#include "lockstore/detail/wire_text.hpp"
#include "lockstore/error.hpp"
#include "lockstore/log.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

struct PgResultDeleter {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

/// One statement parameter: text, or bytes sent in binary (for bytea), or NULL.
struct PgParam {
  std::string value;
  bool binary = false;
  bool null = false;
};

/// A fixed statement, prepared once per connection under `name`.
struct PgStatement {
  const char* name;
  const char* sql;
};

/// Parameters as libpq's send calls take them: pointers into `params`,
/// which must outlive this.
struct WireParams {
  explicit WireParams(const std::vector<PgParam>& params) {
    for (const auto& param : params) {
      values.push_back(param.null ? nullptr : param.value.data());
      lengths.push_back(static_cast<int>(param.value.size()));
      formats.push_back(param.binary ? 1 : 0);
    }
  }
  int count() const noexcept { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};

class PgConnection {
 public:
  /// `executor`: whose reactor watches the socket.
  explicit PgConnection(asio::any_io_executor executor) : executor_(std::move(executor)) {}
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;
  ~PgConnection() { close(); }

  bool connected() const noexcept { return connection_ != nullptr; }
  /// "host:port" of the server, for messages.
  const std::string& endpoint() const noexcept { return endpoint_; }

  /// Checks the conninfo's syntax without connecting (errc::invalid_argument).
  static void validate(const std::string& conninfo) {
    char* message = nullptr;
    PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &message);
    if (options == nullptr) {
      std::string why = message != nullptr ? message : "out of memory";
      PQfreemem(message);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      throw Error(errc::invalid_argument, fmt::format("invalid PostgreSQL conninfo: {}", why));
    }
    PQconninfoFree(options);
  }

  /// The conninfo's connect_timeout (seconds), or 10 s when it has none.
  static std::chrono::milliseconds connect_timeout(const std::string& conninfo) {
    std::chrono::milliseconds timeout = std::chrono::seconds(10);
    PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), nullptr);
    for (auto* option = options; option != nullptr && option->keyword != nullptr; ++option) {
      if (std::string_view(option->keyword) != "connect_timeout" || option->val == nullptr) continue;
      try {
        const int seconds = std::stoi(option->val);
        if (seconds > 0) timeout = std::chrono::seconds(std::max(seconds, 2));
      } catch (const std::exception&) {
      }
    }
    PQconninfoFree(options);
    return timeout;
  }

  /// Connects within `timeout`. Throws errc::backend_failure naming the
  /// server's host and port when the server cannot be reached or refuses the
  /// connection, errc::invalid_argument for a malformed conninfo.
  asio::awaitable<void> connect(const std::string& conninfo, std::chrono::milliseconds timeout) {
    close();
    validate(conninfo);
    PGconn* connection = PQconnectStart(conninfo.c_str());
    if (connection == nullptr) throw Error(errc::backend_failure, "libpq could not allocate a connection");
    connection_ = connection;
    endpoint_ = describe_endpoint();
    const auto give_up_at = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto polled = PQstatus(connection_) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PQconnectPoll(connection_);
      endpoint_ = describe_endpoint();
      if (polled == PGRES_POLLING_OK) break;
      if (polled == PGRES_POLLING_FAILED) fail_connect("");
      // The socket can change between polls (libpq tries each address).
      watch(PQsocket(connection_));
      const auto direction = polled == PGRES_POLLING_WRITING ? asio::posix::stream_descriptor::wait_write
                                                              : asio::posix::stream_descriptor::wait_read;
      const bool ready = co_await wait_until(direction, give_up_at);
      if (!ready) fail_connect(fmt::format("no answer within {} ms", timeout.count()));
    }
    if (PQsetnonblocking(connection_, 1) != 0) fail_connect("could not switch to non-blocking mode");
    // Server notices ("relation already exists, skipping") go to the log at
    // debug level, not to stderr.
    PQsetNoticeProcessor(
        connection_,
        [](void*, const char* message) {
          std::string_view text(message);
          while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
          log(LogLevel::debug, fmt::format("PostgreSQL: {}", text));
        },
        nullptr);
    watch(PQsocket(connection_));
  }

  /// Prepares each statement under its name, for execute().
  asio::awaitable<void> prepare(const std::vector<PgStatement>& statements) {
    for (const auto& statement : statements) {
      require_connected();
      if (PQsendPrepare(connection_, statement.name, statement.sql, 0, nullptr) != 1) lost(statement.name);
      co_await finish(statement.name);
    }
  }

  /// Runs a prepared statement; returns its last result (throws on error).
  asio::awaitable<PgResult> execute(const char* name, const std::vector<PgParam>& params) {
    require_connected();
    const WireParams wire(params);
    if (PQsendQueryPrepared(connection_, name, wire.count(), wire.values.data(), wire.lengths.data(),
                            wire.formats.data(), 0) != 1)
      lost(name);
    co_return co_await finish(name);
  }

  /// One query of a pipeline: a prepared statement (`name`) or SQL text.
  struct PipelineQuery {
    const char* name = nullptr;
    std::string sql;
    std::vector<PgParam> params;
  };

  /// What a pipeline did: each query's result (empty for a query skipped
  /// after a failure), and the first failure: its index (queries.size()
  /// for one at commit), SQLSTATE and error.
  struct PipelineOutcome {
    std::vector<PgResult> results;
    std::optional<std::size_t> failed;
    std::string sqlstate;
    std::optional<Error> error;
  };

  /// Sends `queries` in one round trip (libpq's pipeline mode) followed by
  /// one Sync: the server runs them as one implicit transaction, committed
  /// at the Sync, or rolled back as a whole when one fails (the rest are
  /// then skipped). A broken connection throws connection_lost. A failed
  /// query is reported in the outcome, not thrown. A result no query of a
  /// fenced write can give (COPY), or a session left inside a transaction,
  /// closes the connection (errc::backend_failure): the next request
  /// starts on a clean one.
  asio::awaitable<PipelineOutcome> execute_pipeline(const char* what, const std::vector<PipelineQuery>& queries) {
    require_connected();
    if (PQenterPipelineMode(connection_) != 1) lost(what);
    for (const auto& query : queries) {
      const WireParams wire(query.params);
      const int sent = query.name != nullptr
                           ? PQsendQueryPrepared(connection_, query.name, wire.count(), wire.values.data(),
                                                 wire.lengths.data(), wire.formats.data(), 0)
                           : PQsendQueryParams(connection_, query.sql.c_str(), wire.count(), nullptr,
                                               wire.values.data(), wire.lengths.data(), wire.formats.data(), 0);
      if (sent != 1) lost(what);
    }
    if (PQpipelineSync(connection_) != 1) lost(what);
    co_await flush(what);
    PipelineOutcome outcome;
    outcome.results.resize(queries.size());
    // Each query's results end with a null; an error at commit comes after
    // the last query's; the Sync's result ends the pipeline.
    std::size_t index = 0;
    for (bool synced = false; !synced;) {
      co_await read_until_ready(what);
      PgResult result(PQgetResult(connection_));
      if (!result) {
        ++index;
        continue;
      }
      switch (PQresultStatus(result.get())) {
        case PGRES_PIPELINE_SYNC:
          synced = true;
          break;
        case PGRES_FATAL_ERROR:
          if (!outcome.failed) {
            outcome.failed = std::min(index, queries.size());
            const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
            outcome.sqlstate = state != nullptr ? state : "";
            outcome.error = classify(what, result.get());
          }
          break;
        case PGRES_PIPELINE_ABORTED:
          break;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
          if (index < queries.size()) outcome.results[index] = std::move(result);
          break;
        default:
          close();
          throw Error(errc::backend_failure,
                      fmt::format("PostgreSQL at {}: {} gave a result it cannot (status {}, e.g. COPY); the "
                                  "connection was closed",
                                  endpoint_, what, static_cast<int>(PQresultStatus(result.get()))));
      }
    }
    if (PQexitPipelineMode(connection_) != 1) lost(what);
    if (PQstatus(connection_) == CONNECTION_BAD) lost(what);
    if (outcome.error && outcome.error->code() == errc::connection_lost) throw *outcome.error;
    if (PQtransactionStatus(connection_) != PQTRANS_IDLE) {
      close();
      throw Error(errc::backend_failure,
                  fmt::format("PostgreSQL at {}: {} left the session inside a transaction; the connection was "
                              "closed and the transaction rolled back",
                              endpoint_, what));
    }
    co_return outcome;
  }

  /// Runs one or more SQL statements without parameters (simple protocol).
  asio::awaitable<PgResult> execute_script(const char* what, const std::string& sql) {
    require_connected();
    if (PQsendQuery(connection_, sql.c_str()) != 1) lost(what);
    co_return co_await finish(what);
  }

  /// Waits until the server sends something (a notification), then reads it.
  /// Cancellable (per-operation cancellation ends the wait early). Throws
  /// connection_lost when the connection broke.
  asio::awaitable<void> wait_for_input() {
    require_connected();
    auto [error] = co_await socket_->async_wait(asio::posix::stream_descriptor::wait_read,
                                                asio::as_tuple(asio::use_awaitable));
    if (error == asio::error::operation_aborted) co_return;
    if (error || PQconsumeInput(connection_) != 1) lost("waiting for notifications");
  }

  /// Hands each pending notification's payload to `sink`.
  template <class Sink>
  void drain_notifications(Sink&& sink) {
    if (connection_ == nullptr) return;
    while (PGnotify* notification = PQnotifies(connection_)) {
      std::string payload = notification->extra != nullptr ? notification->extra : "";
      PQfreemem(notification);
      sink(payload);
    }
  }

  /// Cuts the request in flight off if `timeout` passes before
  /// disarm_deadline(): it then fails with connection_lost, "no answer
  /// within N ms", and the next request reconnects. For a request that
  /// serves a lease, which must not be answered after the lease's end.
  void arm_deadline(std::chrono::milliseconds timeout) {
    deadline_.emplace(executor_, timeout);
    timed_out_ = false;
    deadline_budget_ = timeout;
    deadline_->async_wait([this](boost::system::error_code error) {
      if (error) return;
      timed_out_ = true;
      if (socket_) {
        boost::system::error_code ignored;
        socket_->cancel(ignored);
      }
    });
  }
  void disarm_deadline() {
    if (deadline_) deadline_->cancel();
  }

  void close() noexcept {
    if (socket_) {
      socket_->release();  // libpq owns the descriptor and closes it
      socket_.reset();
    }
    if (connection_ != nullptr) PQfinish(std::exchange(connection_, nullptr));
  }

 private:
  void watch(int descriptor) {
    if (descriptor < 0) fail_connect("libpq has no socket");
    if (socket_ && socket_->native_handle() == descriptor) return;
    if (socket_) socket_->release();
    socket_.emplace(executor_, descriptor);
  }

  // The descriptor and the timer race in a parallel group of plain
  // operations: no coroutine is spawned, so none of co_spawn's cancellation
  // forwarding (chriskohlhoff/asio#1332) is involved.
  asio::awaitable<bool> wait_until(asio::posix::stream_descriptor::wait_type direction,
                                   std::chrono::steady_clock::time_point give_up_at) {
    asio::steady_timer timer(executor_, give_up_at);
    auto [order, wait_error, timer_error] =
        co_await asio::experimental::make_parallel_group(socket_->async_wait(direction, asio::deferred),
                                                         timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) throw boost::system::system_error(asio::error::operation_aborted);
    co_return order[0] == 0 && !wait_error;
  }

  asio::awaitable<void> flush(const char* what) {
    for (;;) {
      const int flushed = PQflush(connection_);
      if (flushed == 0) break;
      if (flushed < 0) lost(what);
      auto [error] = co_await socket_->async_wait(asio::posix::stream_descriptor::wait_write, uncancellable());
      if (error) lost(what);
    }
  }

  asio::awaitable<void> read_until_ready(const char* what) {
    // What already reached the socket is read at once: a pipeline's results
    // arrive together, and a wait on the reactor per result costs more than
    // the server's work for a small statement.
    if (PQisBusy(connection_) == 1 && PQconsumeInput(connection_) != 1) lost(what);
    while (PQisBusy(connection_) == 1) {
      auto [error] = co_await socket_->async_wait(asio::posix::stream_descriptor::wait_read, uncancellable());
      if (error || PQconsumeInput(connection_) != 1) lost(what);
    }
  }

  // Sends what libpq buffered, reads until the reply is complete, and
  // returns the last result; an error result throws.
  asio::awaitable<PgResult> finish(const char* what) {
    co_await flush(what);
    PgResult last;
    std::optional<Error> failure;
    for (;;) {
      co_await read_until_ready(what);
      PgResult result(PQgetResult(connection_));
      if (!result) break;
      const auto status = PQresultStatus(result.get());
      if (status == PGRES_FATAL_ERROR && !failure) failure = classify(what, result.get());
      last = std::move(result);
    }
    if (PQstatus(connection_) == CONNECTION_BAD) lost(what);
    if (failure) throw *failure;
    co_return last;
  }

  Error classify(const char* what, const PGresult* result) {
    const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
    std::string sqlstate = state != nullptr ? state : "";
    std::string message = PQresultErrorMessage(result);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    // Class 08 (connection exception) and 57P01-57P03 (shutdown) mean the
    // session is gone, whatever state the socket is in.
    const bool gone = sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
    return Error(gone ? errc::connection_lost : errc::backend_failure,
                 fmt::format("PostgreSQL at {} failed {}: {} (SQLSTATE {})", endpoint_, what, message, sqlstate));
  }

  void require_connected() const {
    if (connection_ == nullptr)
      throw Error(errc::connection_lost, fmt::format("not connected to PostgreSQL at {}", endpoint_));
  }

  [[noreturn]] void lost(const char* what) {
    std::string message = connection_ != nullptr ? PQerrorMessage(connection_) : "";
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    if (timed_out_) message = fmt::format("no answer within {} ms", deadline_budget_.count());
    close();
    throw Error(errc::connection_lost,
                fmt::format("lost the connection to PostgreSQL at {} during {}: {}", endpoint_, what, message));
  }

  [[noreturn]] void fail_connect(const std::string& reason) {
    std::string message = connection_ != nullptr ? PQerrorMessage(connection_) : "";
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    if (!reason.empty()) message = message.empty() ? reason : reason + "; " + message;
    close();
    throw Error(errc::backend_failure, fmt::format("cannot connect to PostgreSQL at {}: {}", endpoint_, message));
  }

  std::string describe_endpoint() const {
    const char* host = PQhost(connection_);
    const char* port = PQport(connection_);
    return fmt::format("{}:{}", host != nullptr && *host != '\0' ? host : "localhost",
                       port != nullptr && *port != '\0' ? port : "5432");
  }

  PGconn* connection_ = nullptr;
  std::optional<asio::posix::stream_descriptor> socket_;
  asio::any_io_executor executor_;
  std::string endpoint_ = "(not connected)";
  std::optional<asio::steady_timer> deadline_;
  bool timed_out_ = false;
  std::chrono::milliseconds deadline_budget_{0};
};

}  // namespace lockstore::detail
