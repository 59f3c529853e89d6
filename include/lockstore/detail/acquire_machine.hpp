// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The waiting protocol of acquire(), as a state machine that does no I/O and
// reads no clock: the driver (acquire_loop.hpp) performs each step it asks
// for with the backend's primitives and reports back what happened and
// when. Every backend's acquire() runs this one machine, and its rules are
// tested without servers or timers (tests/test_core.cpp):
//
//   attempt ──granted in time──────────────────────────▶ done
//      │  ──granted after the lease's assumed end──▶ give back (late) ──▶ wait (until now)
//      │  ──refused──▶ wait until min(holder's expiry or poll, deadline,
//      │               next ticket refresh) ──woken──▶ attempt
//      │  ──refused at or past the deadline──────────────▶ timed out
//      └─ cancelled: granted ──▶ give back (cancelled) ──▶ aborted; else ──▶ aborted
//
// A waiter's ticket in its backend's queue of waiters lives
// ticket_lifetime unless refreshed; every attempt refreshes it, so a waiter
// holding a ticket that can lapse attempts at least every ticket_refresh.
#pragma once

#include "lockstore/detail/durations.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lockstore::detail {

/// How long a waiter's ticket stays live in its backend's queue without a
/// refresh: a waiter that vanished (killed, partitioned) holds the queue up
/// for at most this long. Passed to every backend's queue (SQL, Lua) from
/// here.
inline constexpr std::chrono::milliseconds ticket_lifetime{1500};
/// A waiter with a ticket attempts again, refreshing it, at least this often.
inline constexpr std::chrono::milliseconds ticket_refresh = ticket_lifetime / 3;

/// What the driver does next.
struct AcquireStep {
  enum class Kind {
    attempt,    // try once (a queued attempt: it takes or refreshes the ticket)
    wait,       // wait for a wake-up for the key, at most until `until`
    give_back,  // undo the lease the last attempt was granted
    done,       // return the last attempt's guard
    timed_out,  // throw errc::timeout
    aborted,    // throw operation_aborted (cancelled)
  };
  Kind kind = Kind::attempt;
  std::chrono::steady_clock::time_point until{};  // wait
  std::int64_t ticket = 0;                         // wait: the waiter's ticket, 0 for none
  bool cancelled = false;                          // give_back: because the caller cancelled
};

/// What an attempt came back with.
struct AttemptReport {
  bool granted = false;
  /// granted: the lease's assumed end (its request's send time + TTL).
  std::chrono::steady_clock::time_point valid_until{};
  /// refused: when to look again on its own (the holder's expiry, a poll).
  std::chrono::steady_clock::time_point retry_at = std::chrono::steady_clock::time_point::max();
  /// The waiter's ticket after the attempt; 0 for none.
  std::int64_t ticket = 0;
  /// The ticket lapses after ticket_lifetime unless refreshed (every
  /// backend's but MemoryLock's, whose queue lives in this process).
  bool ticket_expires = true;
};

class AcquireMachine {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  /// An acquire that began at `now` and gives up `deadline` later.
  AcquireMachine(TimePoint now, std::chrono::milliseconds deadline)
      : give_up_at_(saturating_deadline<std::chrono::steady_clock>(now, deadline)) {}

  /// The first step: an attempt, whatever the deadline.
  AcquireStep start() {
    expect(State::created, "start");
    return attempt();
  }

  /// After an attempt, at `now`; `cancelled`: the caller's cancellation
  /// arrived while it ran (the grant, if any, must be given back).
  AcquireStep attempted(const AttemptReport& report, TimePoint now, bool cancelled) {
    expect(State::attempting, "attempted");
    ticket_ = report.ticket;
    ticket_expires_ = report.ticket_expires;
    if (cancelled) {
      if (!report.granted) return finish(AcquireStep::Kind::aborted);
      state_ = State::giving_back;
      give_back_cancelled_ = true;
      return AcquireStep{AcquireStep::Kind::give_back, {}, 0, true};
    }
    if (report.granted && now < report.valid_until) return finish(AcquireStep::Kind::done);
    if (report.granted) {
      // The answer came after the lease's assumed end (its request waited
      // that long): worth nothing to the caller. Give it back, try again.
      state_ = State::giving_back;
      give_back_cancelled_ = false;
      return AcquireStep{AcquireStep::Kind::give_back, {}, 0, false};
    }
    return refused(now, report.retry_at);
  }

  /// After a give_back, at `now` (which never fails: a failed undo is
  /// logged and the lease expires by its TTL).
  AcquireStep given_back(TimePoint now) {
    expect(State::giving_back, "given_back");
    if (give_back_cancelled_) return finish(AcquireStep::Kind::aborted);
    return refused(now, now);
  }

  /// After a wait ended (woken, or its time came).
  AcquireStep woken() {
    expect(State::waiting, "woken");
    return attempt();
  }

  TimePoint give_up_at() const noexcept { return give_up_at_; }
  bool finished() const noexcept { return state_ == State::finished; }

 private:
  enum class State { created, attempting, giving_back, waiting, finished };

  AcquireStep attempt() {
    state_ = State::attempting;
    return AcquireStep{AcquireStep::Kind::attempt, {}, 0, false};
  }

  AcquireStep refused(TimePoint now, TimePoint retry_at) {
    if (now >= give_up_at_) return finish(AcquireStep::Kind::timed_out);
    auto until = std::min(retry_at, give_up_at_);
    if (ticket_ != 0 && ticket_expires_) until = std::min(until, now + ticket_refresh);
    state_ = State::waiting;
    return AcquireStep{AcquireStep::Kind::wait, until, ticket_, false};
  }

  AcquireStep finish(AcquireStep::Kind kind) {
    state_ = State::finished;
    return AcquireStep{kind, {}, 0, false};
  }

  void expect(State state, const char* call) const {
    if (state_ != state) throw std::logic_error(std::string("AcquireMachine::") + call + " called out of turn");
  }

  TimePoint give_up_at_;
  State state_ = State::created;
  std::int64_t ticket_ = 0;
  bool ticket_expires_ = true;
  bool give_back_cancelled_ = false;
};

}  // namespace lockstore::detail
