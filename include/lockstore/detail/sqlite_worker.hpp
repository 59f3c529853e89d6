// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The thread that owns one SQLite connection. Callers hand it jobs; each job
// runs on this thread and its result is posted back to the caller's
// executor, so no statement ever runs on an executor thread. Jobs queued
// together run as one batch per wake-up. Destroying the worker finishes the
// queued jobs, closes the connection and joins the thread. A caller whose
// execution context shuts down while its statement runs is abandoned
// (parked_completions.hpp): the statement still finishes, and its result is
// dropped instead of being posted to a context that is gone.
#pragma once

#include "lockstore/detail/parked_completions.hpp"
#include "lockstore/detail/sqlite_connection.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

class SqliteWorker {
 public:
  using Opener = std::function<std::unique_ptr<SqliteConnection>()>;

  /// Starts the thread, which opens the connection with `opener` before any
  /// job runs. If opening fails, every job fails with the opener's error.
  /// `completion_spin`: how long a caller waits on its own thread for a
  /// statement's result before it suspends (0: always suspend).
  SqliteWorker(Opener opener, std::chrono::microseconds completion_spin)
      : completion_spin_(completion_spin),
        core_(std::make_shared<Core>()),
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

  template <class Result>
  class Started;

  /// Runs `f(connection)` on the worker thread and returns its result or
  /// rethrows its exception, on the caller's executor. Most statements finish
  /// within the completion spin, and the caller takes the result without
  /// suspending; otherwise it suspends and the worker posts the resumption to
  /// the caller's executor. Not cancellable once queued: a statement always
  /// runs to completion.
  template <class F>
  auto run(F f) -> asio::awaitable<std::invoke_result_t<F&, SqliteConnection&>> {
    auto started = start(std::move(f));  // here, so the job is queued when awaited, not before
    auto waiting = outcome(std::move(started));
    co_return co_await std::move(waiting);
  }

  /// Queues `f(connection)` now, from any thread; `outcome()` awaits it
  /// later. Jobs run in the order they were queued.
  template <class F>
  auto start(F f) -> Started<std::invoke_result_t<F&, SqliteConnection&>> {
    using Result = std::invoke_result_t<F&, SqliteConnection&>;
    auto completion = std::make_shared<Completion<Boxed<Result>>>();
    core_->submit(std::make_unique<Job<F, Boxed<Result>>>(std::move(f), completion));
    return Started<Result>(std::move(completion));
  }

  /// The result of a started job, as run() returns it. Awaited once.
  template <class Result>
  asio::awaitable<Result> outcome(Started<Result> started) {
    auto completion = std::move(started.completion_);
    if (!completion->wait_briefly(core_->spin_budget_now(completion_spin_))) {
      // A named local awaited on its own: g++ 12 destroys temporaries of a
      // co_await full-expression twice.
      auto suspended = asio::async_initiate<decltype(asio::use_awaitable), void()>(
          [completion](auto handler) { completion->suspend(std::move(handler), completion); }, asio::use_awaitable);
      co_await std::move(suspended);
    }
    // The outcome is moved out here, on the caller's thread: the worker may
    // hold the last reference to `completion` and must then destroy only
    // empty slots, never an exception or a result the caller has used.
    if (auto failure = std::exchange(completion->failure, nullptr)) std::rethrow_exception(failure);
    if constexpr (!std::is_void_v<Result>) {
      auto result = std::move(*completion->result);
      completion->result.reset();
      co_return result;
    }
  }

  /// Queues `f(connection)` and returns at once; its result and any error
  /// are dropped. For clean-up that cannot wait, such as a destructor's.
  template <class F>
  void post(F f) {
    core_->submit(std::make_unique<Detached<F>>(std::move(f)));
  }

 private:
  template <class Result>
  using Boxed = std::optional<std::conditional_t<std::is_void_v<Result>, std::monostate, Result>>;

  // Adaptive spinning. A spin that ends without what it waited for has burnt
  // its whole budget on a core that another thread or process may need: with
  // 8 processes contending for one key on 2 cores, perf put about 60% of all
  // CPU time in these spins. So a miss costs credit and a hit earns it back;
  // while the credit is negative the spin is skipped, and each skipped spin
  // earns one step back, so spinning is retried after a few statements.
  struct SpinCredit {
    static constexpr int ceiling = 4;
    static constexpr int miss_penalty = 8;
    std::atomic<int> credit{ceiling};

    bool allowed() {
      if (credit.load(std::memory_order_relaxed) >= 0) return true;
      credit.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    void hit() {
      if (credit.load(std::memory_order_relaxed) < ceiling) credit.fetch_add(1, std::memory_order_relaxed);
    }
    void miss() { credit.fetch_sub(miss_penalty, std::memory_order_relaxed); }
  };

  struct SpinBudget {
    std::chrono::microseconds length;
    SpinCredit* credit;
  };

  // Where a job's outcome meets its caller. Whoever comes second (the worker
  // finishing, or the caller suspending) completes the hand-over; the
  // caller's context shutting down first abandons it.
  template <class Box>
  struct Completion final : Parked {
    enum : int { pending, done, suspended };
    std::atomic<int> state{pending};
    std::exception_ptr failure;
    Box result;
    std::mutex handover;  // orders resume() against abandon()
    std::optional<asio::any_completion_handler<void()>> handler;
    std::optional<asio::any_io_executor> executor;
    ParkedCompletions* parked_in = nullptr;

    bool wait_briefly(SpinBudget budget) const {
      if (state.load(std::memory_order_acquire) == done) return true;
      if (budget.length <= std::chrono::microseconds::zero()) return false;
      const auto give_up = std::chrono::steady_clock::now() + budget.length;
      do {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (state.load(std::memory_order_acquire) == done) {
          budget.credit->hit();
          return true;
        }
      } while (std::chrono::steady_clock::now() < give_up);
      budget.credit->miss();
      return false;
    }

    template <class Handler>
    void suspend(Handler completion_handler, const std::shared_ptr<Completion>& self) {
      auto target = asio::prefer(asio::get_associated_executor(completion_handler),
                                 asio::execution::outstanding_work.tracked);
      auto& parking = ParkedCompletions::of(target);
      {
        std::lock_guard lock(handover);
        if (!parking.enter(this, self)) return;  // the context has shut down: drop the handler
        parked_in = &parking;
        executor.emplace(std::move(target));
        handler.emplace(std::move(completion_handler));
      }
      int expected = pending;
      if (!state.compare_exchange_strong(expected, suspended, std::memory_order_acq_rel)) resume();  // already done
    }

    // Called by the worker after storing the outcome.
    void finish() {
      int expected = pending;
      if (state.compare_exchange_strong(expected, done, std::memory_order_acq_rel)) return;  // caller takes it
      resume();  // the caller is suspended
    }

    // Posted under the lock: abandon() waits for it, so the post never
    // reaches a context being destroyed.
    void resume() {
      std::lock_guard lock(handover);
      if (!handler) return;  // abandoned
      {
        auto target = std::move(*executor);
        auto completion_handler = std::move(*handler);
        handler.reset();
        executor.reset();
        asio::post(target, std::move(completion_handler));
      }  // the work-counting executor is gone before the context may go
      // Only now: until it has left, the context's shutdown waits for this
      // lock, so it cannot free the context under the post above.
      std::exchange(parked_in, nullptr)->leave(this);
    }

    void abandon() override {
      std::optional<asio::any_completion_handler<void()>> dropped_handler;
      std::optional<asio::any_io_executor> dropped_executor;
      {
        std::lock_guard lock(handover);
        parked_in = nullptr;
        dropped_handler = std::move(handler);
        dropped_executor = std::move(executor);
        handler.reset();
        executor.reset();
      }
      // Destroyed here, outside the lock, while the context still exists:
      // the executor's count of outstanding work drops, and the handler
      // hands the caller's frames to the context's queue.
    }
  };

 public:
  /// A job queued by start(). Dropping it unawaited is allowed: the job still
  /// runs, and a copy lets a later job on the worker thread peek() at it.
  template <class Result>
  class Started {
   public:
    /// On the worker thread, in a job queued after this one: the finished
    /// job's result, or null if it threw (or was taken by outcome()).
    const Result* peek() const {
      return completion_->failure || !completion_->result ? nullptr : &*completion_->result;
    }

   private:
    friend class SqliteWorker;
    explicit Started(std::shared_ptr<Completion<Boxed<Result>>> completion) : completion_(std::move(completion)) {}
    std::shared_ptr<Completion<Boxed<Result>>> completion_;
  };

 private:
  struct JobBase {
    virtual ~JobBase() = default;
    virtual void run(SqliteConnection* connection, const std::exception_ptr& open_error) = 0;
  };

  template <class F, class Box>
  struct Job final : JobBase {
    Job(F f, std::shared_ptr<Completion<Box>> c) : function(std::move(f)), completion(std::move(c)) {}

    void run(SqliteConnection* connection, const std::exception_ptr& open_error) override {
      try {
        if (connection == nullptr) std::rethrow_exception(open_error);
        if constexpr (std::is_void_v<std::invoke_result_t<F&, SqliteConnection&>>) {
          function(*connection);
          completion->result.emplace();
        } else {
          completion->result.emplace(function(*connection));
        }
      } catch (...) {
        completion->failure = std::current_exception();
      }
      completion->finish();
    }

    F function;
    std::shared_ptr<Completion<Box>> completion;
  };

  template <class F>
  struct Detached final : JobBase {
    explicit Detached(F f) : function(std::move(f)) {}

    void run(SqliteConnection* connection, const std::exception_ptr&) override {
      if (connection == nullptr) return;
      try {
        function(*connection);
      } catch (...) {  // nobody waits for it; what it cleans up also expires
      }
    }

    F function;
  };

  // The queue between callers and the worker thread. A statement takes tens
  // of microseconds; waking a parked thread costs about as much, so after a
  // batch the worker spins briefly for the next job before it parks, and a
  // submitter signals the condition variable only when the worker is parked.
  struct Core {
    static constexpr auto spin_budget = std::chrono::microseconds(100);

    void submit(std::unique_ptr<JobBase> job) {
      bool wake_needed = false;
      {
        std::lock_guard lock(mutex);
        queue.push_back(std::move(job));
        wake_needed = parked;
      }
      queued.fetch_add(1, std::memory_order_release);
      if (wake_needed) wake.notify_one();
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
        spin_for_work();
        {
          std::unique_lock lock(mutex);
          while (queue.empty() && !stopping) {
            parked = true;
            wake.wait(lock);
            parked = false;
          }
          if (queue.empty()) break;  // stopping, and everything queued has run
          batch.swap(queue);
          queued.fetch_sub(batch.size(), std::memory_order_relaxed);
        }
        for (auto& job : batch) job->run(connection.get(), open_error);
        batch.clear();
      }
      connection.reset();
    }

    void spin_for_work() {
      if (!work_credit.allowed()) return;
      const auto give_up = std::chrono::steady_clock::now() + spin_budget;
      while (queued.load(std::memory_order_acquire) == 0) {
        if (std::chrono::steady_clock::now() >= give_up) {
          work_credit.miss();
          return;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      work_credit.hit();
    }

    SpinBudget spin_budget_now(std::chrono::microseconds configured) {
      if (configured <= std::chrono::microseconds::zero() || !completion_credit.allowed())
        return {std::chrono::microseconds::zero(), &completion_credit};
      return {configured, &completion_credit};
    }

    SpinCredit completion_credit;  // callers waiting for a result
    SpinCredit work_credit;        // the worker waiting for the next job

    std::mutex mutex;
    std::condition_variable wake;
    std::vector<std::unique_ptr<JobBase>> queue;
    std::atomic<std::size_t> queued{0};
    bool parked = false;    // guarded by mutex
    bool stopping = false;  // guarded by mutex
    std::unique_ptr<SqliteConnection> connection;  // touched only on the worker thread
  };

  std::chrono::microseconds completion_spin_;
  std::shared_ptr<Core> core_;
  std::thread thread_;
};

}  // namespace lockstore::detail
