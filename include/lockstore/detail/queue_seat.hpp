// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// An acquire() caller's place in its backend's queue of waiters: the ticket
// it was given at its first refusal (kept by the backend's attempts), and
// the backend's one primitive for giving it up. However the acquire ends
// (granted: the granting statement already dropped the ticket; timed out,
// cancelled, or its frame destroyed with its io_context), a seat that still
// holds a ticket leaves the queue, so the next in line need not wait for
// the ticket to lapse (detail::ticket_lifetime).
#pragma once

#include <optional>
#include <utility>

namespace lockstore::detail {

/// `Leave`: a callable `void(Ticket) noexcept`-in-effect that gives the
/// ticket up without waiting for an answer (it queues the statement or
/// script, or edits an in-process queue); a failure is the backend's to
/// swallow: the ticket then lapses by itself.
template <class Ticket, class Leave>
class QueueSeat {
 public:
  explicit QueueSeat(Leave leave) : leave_(std::move(leave)) {}
  QueueSeat(const QueueSeat&) = delete;
  QueueSeat& operator=(const QueueSeat&) = delete;
  ~QueueSeat() {
    if (ticket) leave_(*ticket);
  }

  /// Set and cleared by the backend's attempts, on the acquire's own turn.
  std::optional<Ticket> ticket;

 private:
  Leave leave_;
};

}  // namespace lockstore::detail
