// The thread that owns one SQLite connection. Callers hand it jobs; each job
// runs on this thread and its result is posted back to the caller's
// executor, so no statement ever runs on an executor thread. Jobs queued
// together run as one batch per wake-up. Destroying the worker finishes the
// queued jobs, closes the connection and joins the thread.
#pragma once

#include "lockstore/detail/sqlite_connection.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

class SqliteWorker {
 public:
  using Opener = std::function<std::unique_ptr<SqliteConnection>()>;

  /// Starts the thread, which opens the connection with `opener` before any
  /// job runs. If opening fails, every job fails with the opener's error.
  explicit SqliteWorker(Opener opener)
      : core_(std::make_shared<Core>()),
        thread_([core = core_, opener = std::move(opener)] { core->loop(opener); }) {}
  SqliteWorker(const SqliteWorker&) = delete;
  SqliteWorker& operator=(const SqliteWorker&) = delete;

  ~SqliteWorker() {
    {
      std::lock_guard lock(core_->mutex);
      core_->stopping = true;
    }
    core_->wake.notify_one();
    // If the last handle is dropped on the worker thread itself (by a job
    // that held one), joining would deadlock: the thread then finishes alone,
    // keeping the core alive through its own reference.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

  /// Runs `f(connection)` on the worker thread; resumes on the caller's
  /// executor with its result or exception. Not cancellable once queued: a
  /// statement always runs to completion.
  template <class F>
  auto run(F f) -> asio::awaitable<std::invoke_result_t<F&, SqliteConnection&>> {
    using Result = std::invoke_result_t<F&, SqliteConnection&>;
    using Boxed = std::optional<std::conditional_t<std::is_void_v<Result>, std::monostate, Result>>;
    // A named local awaited on its own: g++ 12 destroys temporaries of a
    // co_await full-expression twice.
    auto operation = asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, Boxed)>(
        [this](auto handler, F job) {
          using Handler = decltype(handler);
          auto executor = asio::prefer(asio::get_associated_executor(handler),
                                       asio::execution::outstanding_work.tracked);
          core_->submit(std::make_unique<Job<F, Handler, Boxed, decltype(executor)>>(
              std::move(job), std::move(handler), std::move(executor)));
        },
        asio::use_awaitable, std::move(f));
    Boxed boxed = co_await std::move(operation);
    if constexpr (!std::is_void_v<Result>) co_return std::move(*boxed);
  }

 private:
  struct JobBase {
    virtual ~JobBase() = default;
    virtual void run(SqliteConnection* connection, const std::exception_ptr& open_error) = 0;
  };

  template <class F, class Handler, class Boxed, class Executor>
  struct Job final : JobBase {
    Job(F f, Handler h, Executor e) : function(std::move(f)), handler(std::move(h)), executor(std::move(e)) {}

    void run(SqliteConnection* connection, const std::exception_ptr& open_error) override {
      std::exception_ptr failure;
      Boxed result;
      try {
        if (connection == nullptr) std::rethrow_exception(open_error);
        if constexpr (std::is_void_v<std::invoke_result_t<F&, SqliteConnection&>>) {
          function(*connection);
          result.emplace();
        } else {
          result.emplace(function(*connection));
        }
      } catch (...) {
        failure = std::current_exception();
      }
      asio::post(executor, [completion = std::move(handler), failure, result = std::move(result)]() mutable {
        std::move(completion)(failure, std::move(result));
      });
    }

    F function;
    Handler handler;
    Executor executor;
  };

  struct Core {
    void submit(std::unique_ptr<JobBase> job) {
      {
        std::lock_guard lock(mutex);
        queue.push_back(std::move(job));
      }
      wake.notify_one();
    }

    void loop(const Opener& opener) {
      std::exception_ptr open_error;
      try {
        connection = opener();
      } catch (...) {
        open_error = std::current_exception();
      }
      std::vector<std::unique_ptr<JobBase>> batch;
      for (;;) {
        {
          std::unique_lock lock(mutex);
          wake.wait(lock, [&] { return stopping || !queue.empty(); });
          if (queue.empty()) break;  // stopping, and everything queued has run
          batch.swap(queue);
        }
        for (auto& job : batch) job->run(connection.get(), open_error);
        batch.clear();
      }
      connection.reset();
    }

    std::mutex mutex;
    std::condition_variable wake;
    std::vector<std::unique_ptr<JobBase>> queue;
    bool stopping = false;
    std::unique_ptr<SqliteConnection> connection;  // touched only on the worker thread
  };

  std::shared_ptr<Core> core_;
  std::thread thread_;
};

}  // namespace lockstore::detail
