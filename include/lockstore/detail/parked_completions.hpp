// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Completion handlers parked outside their execution context (a lock
// waiter's handler kept in a registry that other threads notify, a
// statement's handler kept by the SQLite thread) must not outlive that
// context: posting to a destroyed io_context, or dropping a work-counting
// executor after it, is a use-after-free. Each parked handler is entered
// here, in a service of its executor's context. When the context shuts down
// (its destructor, or shutdown()), the service abandons every entry: the
// handler is destroyed without being called, and nothing is posted to the
// context afterwards. Destroying a coroutine's handler hands its frames to
// the context's own queue, whose shutdown (after this service's: services
// shut down newest first) destroys them, so their destructors (a queue
// seat, an untaken grant) give back what they held.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/detail/strand_executor_service.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/query.hpp>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace lockstore::detail {

namespace asio = boost::asio;

/// Something that holds a completion handler for a context it does not own.
class Parked {
 public:
  virtual ~Parked() = default;

  /// Drops the handler (and any executor or I/O object of the context)
  /// without calling it. Called at most once, by the context's shutdown.
  virtual void abandon() = 0;

 protected:
  Parked() = default;
  Parked(const Parked&) = default;
  Parked& operator=(const Parked&) = default;
};

class ParkedCompletions final : public asio::execution_context::service {
 public:
  inline static asio::execution_context::id id;

  explicit ParkedCompletions(asio::execution_context& context) : asio::execution_context::service(context) {
    // Services shut down newest first. A strand's service, once shut down,
    // destroys what is posted to it on the spot, in the poster's thread:
    // abandoned frames would then be destroyed inside a notifier holding
    // locks. Made first, it shuts down after this service and queues them.
    asio::use_service<asio::detail::strand_executor_service>(context);
  }

  static ParkedCompletions& of(const asio::any_io_executor& executor) {
    return asio::use_service<ParkedCompletions>(asio::query(executor, asio::execution::context));
  }

  /// Registers `parked` until leave(). False when the context has already
  /// shut down: the caller must drop its handler itself.
  [[nodiscard]] bool enter(Parked* parked, std::weak_ptr<Parked> owner) {
    std::lock_guard lock(mutex_);
    if (shut_) return false;
    parked_.insert_or_assign(parked, std::move(owner));
    return true;
  }

  /// Called by the parked object, under its own lock, when it gives up its
  /// handler. The service shuts down only after every abandon() returned, and
  /// abandon() takes that same lock, so the service outlives this call.
  void leave(Parked* parked) {
    std::lock_guard lock(mutex_);
    parked_.erase(parked);
  }

 private:
  void shutdown() override {
    std::unordered_map<Parked*, std::weak_ptr<Parked>> parked;
    {
      std::lock_guard lock(mutex_);
      shut_ = true;
      parked.swap(parked_);
    }
    // Outside the service's lock: an object that is leaving holds its own
    // lock and then takes this one.
    for (auto& [raw, owner] : parked)
      if (auto alive = owner.lock()) alive->abandon();
  }

  std::mutex mutex_;
  bool shut_ = false;
  std::unordered_map<Parked*, std::weak_ptr<Parked>> parked_;
};

}  // namespace lockstore::detail
