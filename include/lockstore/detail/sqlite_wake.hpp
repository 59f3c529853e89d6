// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Cross-process wake-ups for SQLite waiters. Every process that opens a
// database file for writing maps a small shared file next to it,
// `<database>-lockstore-wake`, and announces there each release of a lease
// (the key's hash and the next queue ticket). Each database handle that
// waits on another process's holder has a watcher thread asleep on its own
// futex word in the mapping (its doorbell), and a waiter files its ticket
// there under that doorbell, so a release rings only the doorbell of the
// process whose waiter is next: one process wakes per handoff, not every
// process that has ever waited. Waiters still look again on a slow timer, so
// a lost or missing announcement (a full ring, a stolen doorbell, a process
// that could not map the file) costs time, never correctness: the database
// is the only authority on who holds what.
//
// Layout (two 4 KiB pages, zero-filled on creation):
//   magic · broadcast sequence (futex word) · broadcast listeners · cursor
//   doorbells[64]: ring count (futex word) · pid · owning handle
//   tickets[256]: (ticket's low 32 bits << 32) | (doorbell + 1), by ticket % 256
//   ring[160]: stamp · origin · (key hash << 32 | next ticket's low 32 bits)
// A publisher reserves a ring slot with cursor.fetch_add and writes it
// seqlock-style (stamp 0, origin, payload, stamp = index + 1), then rings the
// doorbell filed for the next ticket, or every doorbell when that ticket is
// not filed (or unknown: 0). A watcher that finds a slot unwritten or
// overwritten wakes all of its waiters instead (conservative). A handle that
// finds every doorbell taken by a live process sleeps on the broadcast
// sequence, which every publish bumps. Doorbells of processes that died
// without giving them back are taken over once the pid is gone. Linux only;
// elsewhere, and when the file cannot be created or mapped (read-only
// directory, foreign file), the board is inactive and waiters poll at
// SqliteOptions::poll_interval.
#pragma once

#include "lockstore/detail/random.hpp"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#ifdef __linux__
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>
#endif

namespace lockstore::detail {

/// 32-bit FNV-1a: the same in every process and build, unlike std::hash.
inline std::uint32_t wake_hash(std::string_view key) noexcept {
  std::uint32_t hash = 2166136261u;
  for (const char byte : key) {
    hash ^= static_cast<std::uint32_t>(static_cast<unsigned char>(byte));
    hash *= 16777619u;
  }
  return hash;
}

class WakeBoard {
 public:
  static constexpr std::uint64_t magic = 0x324b41574b434f4cull;  // "LOCKWAK2", little-endian
  static constexpr std::size_t file_size = 8192;
  static constexpr int doorbells = 64;
  static constexpr int no_doorbell = -1;

  /// Maps `<database>-lockstore-wake`, named after the database's resolved
  /// path (a symlink to the file shares its wake file); inactive if that is
  /// not possible.
  explicit WakeBoard(const std::filesystem::path& database) : origin_(static_cast<std::uint64_t>(ThreadRandom::between(1, INT64_MAX))) {
#ifdef __linux__
    std::error_code unresolved;
    auto resolved = std::filesystem::canonical(database, unresolved);
    if (unresolved) resolved = database;
    const auto path = resolved.string() + "-lockstore-wake";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) return;
    struct stat status {};
    struct stat database_status {};
    if (::fstat(fd, &status) != 0 || (status.st_size != 0 && status.st_size != static_cast<off_t>(file_size))) {
      ::close(fd);
      return;
    }
    // Readable and writable by whoever may write the database (the umask
    // would otherwise keep other users' processes out of the wake-ups).
    if (status.st_size == 0 && ::stat(resolved.c_str(), &database_status) == 0)
      ::fchmod(fd, database_status.st_mode & 0666);
    // The pages are allocated before they are mapped, as SQLite does for its
    // -shm file: a sparse file's first write through the mapping on a full
    // disk is a SIGBUS, not an error. Without them, waiters poll instead.
    if (::posix_fallocate(fd, 0, static_cast<off_t>(file_size)) != 0) {
      ::close(fd);
      return;
    }
    void* mapped = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (mapped == MAP_FAILED) return;
    auto* layout = static_cast<Layout*>(mapped);
    std::uint64_t expected = 0;
    if (!layout->magic.compare_exchange_strong(expected, magic) && expected != magic) {
      ::munmap(mapped, file_size);  // someone else's file: leave it alone
      return;
    }
    layout_ = layout;
#else
    (void)database;
#endif
  }

  WakeBoard(const WakeBoard&) = delete;
  WakeBoard& operator=(const WakeBoard&) = delete;

  ~WakeBoard() {
    stop_watching();
#ifdef __linux__
    if (layout_ != nullptr) ::munmap(layout_, file_size);
#endif
  }

  bool active() const noexcept { return layout_ != nullptr; }

  /// This handle's doorbell, or no_doorbell (not watching, or all taken).
  int doorbell() const noexcept { return doorbell_.load(); }

  /// How many times the watcher woke to new announcements (for tests and
  /// diagnostics: a handoff should wake one process, not all of them).
  std::uint64_t wakeups() const noexcept { return wakeups_.load(); }

  /// How many times doorbell `bell` was rung, by any process (diagnostics).
  std::uint32_t rings(int bell) const noexcept {
    return layout_ != nullptr && bell >= 0 && bell < doorbells ? layout_->bells[bell].rung.load() : 0;
  }

  /// Announces that `key` was freed and `next_ticket` (0: unknown) is next,
  /// and rings the doorbell filed for that ticket (all of them if none is).
  void publish(std::string_view key, std::int64_t next_ticket) noexcept {
#ifdef __linux__
    if (layout_ == nullptr) return;
    const auto index = layout_->cursor.fetch_add(1);
    auto& slot = layout_->ring[index % slots];
    slot.stamp.store(0);
    slot.origin.store(origin_);
    slot.payload.store(std::uint64_t{wake_hash(key)} << 32 | static_cast<std::uint32_t>(next_ticket));
    slot.stamp.store(index + 1);
    layout_->sequence.fetch_add(1);
    if (layout_->broadcast_listeners.load() > 0) futex(layout_->sequence, FUTEX_WAKE, INT_MAX, nullptr);
    const int target = next_ticket != 0 ? filed_doorbell(next_ticket) : no_doorbell;
    if (target != no_doorbell) {
      if (layout_->bells[target].owner.load() != origin_) ring(target);  // ours: woken locally already
      return;
    }
    for (int bell = 0; bell < doorbells; ++bell) {
      const auto owner = layout_->bells[bell].owner.load();
      if (owner != 0 && owner != origin_) ring(bell);
    }
#else
    (void)key;
    (void)next_ticket;
#endif
  }

  /// Files `ticket` under this handle's doorbell, so that the release that
  /// names it wakes this process only. Without a doorbell the entry says
  /// so, and that release rings every doorbell. Call after every take or
  /// refresh of the ticket, before the transaction that holds it commits.
  void file_ticket(std::int64_t ticket) noexcept {
    if (layout_ == nullptr || ticket <= 0) return;
    const int bell = doorbell_.load();
    const auto low = static_cast<std::uint32_t>(ticket);
    layout_->tickets[low % ticket_slots].store(std::uint64_t{low} << 32 |
                                               static_cast<std::uint32_t>(bell + 1));  // 0: no doorbell
  }

  /// Starts the watcher thread (once) that wakes `waiters` on announcements
  /// from other handles, and takes a doorbell for it. Returns whether the
  /// board is active; sets `*started` when this call started the thread, so
  /// that the caller can look again for a release announced before the
  /// watcher existed (and file its ticket under the new doorbell).
  /// `listener` (SqliteWakeups) gets notify_where(key_matches, ticket_low)
  /// and notify_all() from the watcher thread; it must outlive this board.
  template <class Listener>
  bool watch(Listener& listener, bool* started = nullptr) {
    if (layout_ == nullptr) return false;
    std::lock_guard lock(mutex_);
    if (!watcher_.joinable()) {
      if (started != nullptr) *started = true;
      // The starting point is read here, not on the new thread: an
      // announcement made after watch() returns is delivered even if the
      // thread has not run yet.
      const int bell = claim_doorbell();
      doorbell_.store(bell);
      if (bell == no_doorbell) layout_->broadcast_listeners.fetch_add(1);
      const auto rung = word(bell).load();
      const auto cursor = layout_->cursor.load();
      watcher_ = std::thread([this, &listener, rung, cursor] { run(listener, rung, cursor); });
    }
    return true;
  }

 private:
  static constexpr std::size_t slots = 160;
  static constexpr std::uint32_t ticket_slots = 256;

  struct Slot {
    std::atomic<std::uint64_t> stamp;    // index + 1 once written; 0 while being written
    std::atomic<std::uint64_t> origin;   // the publishing handle
    std::atomic<std::uint64_t> payload;  // key hash << 32 | low 32 bits of the next ticket
  };
  struct Doorbell {
    std::atomic<std::uint32_t> rung;   // the futex word its watcher sleeps on
    std::atomic<std::uint32_t> pid;    // the owner's process (0 while being claimed)
    std::atomic<std::uint64_t> owner;  // the owning handle's origin; 0: free
  };
  struct Layout {
    std::atomic<std::uint64_t> magic;
    std::atomic<std::uint32_t> sequence;             // futex word of handles without a doorbell
    std::atomic<std::uint32_t> broadcast_listeners;  // how many such handles (a hint)
    std::atomic<std::uint64_t> cursor;
    Doorbell bells[doorbells];
    std::atomic<std::uint64_t> tickets[ticket_slots];
    Slot ring[slots];
  };
  static_assert(sizeof(Layout) <= file_size);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
                "the wake board shares atomics between processes");

  std::atomic<std::uint32_t>& word(int bell) noexcept {
    return bell == no_doorbell ? layout_->sequence : layout_->bells[bell].rung;
  }

#ifdef __linux__
  static long futex(std::atomic<std::uint32_t>& target, int operation, std::uint32_t value,
                    const timespec* timeout) noexcept {
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&target), operation, value, timeout, nullptr, 0);
  }

  void ring(int bell) noexcept {
    layout_->bells[bell].rung.fetch_add(1);
    futex(layout_->bells[bell].rung, FUTEX_WAKE, INT_MAX, nullptr);
  }

  int filed_doorbell(std::int64_t ticket) const noexcept {
    const auto low = static_cast<std::uint32_t>(ticket);
    const auto entry = layout_->tickets[low % ticket_slots].load();
    if (static_cast<std::uint32_t>(entry >> 32) != low) return no_doorbell;  // not filed, or overwritten
    const int bell = static_cast<int>(static_cast<std::uint32_t>(entry)) - 1;
    if (bell < 0 || bell >= doorbells || layout_->bells[bell].owner.load() == 0) return no_doorbell;
    return bell;
  }

  // A free doorbell, else one whose process is gone (a SIGKILLed process
  // cannot give its doorbell back). A pid reused by an unrelated process
  // keeps that doorbell taken until the process ends; a process in another
  // pid namespace may look gone and lose its doorbell, which its watcher
  // notices and claims another (a slower wake-up meanwhile, never a wrong
  // grant).
  int claim_doorbell() noexcept {
    const auto self = static_cast<std::uint32_t>(::getpid());
    for (int bell = 0; bell < doorbells; ++bell) {
      std::uint64_t expected = 0;
      if (layout_->bells[bell].owner.compare_exchange_strong(expected, origin_)) {
        layout_->bells[bell].pid.store(self);
        return bell;
      }
    }
    for (int bell = 0; bell < doorbells; ++bell) {
      auto& door = layout_->bells[bell];
      auto owner = door.owner.load();
      const auto pid = door.pid.load();
      if (pid == 0 || pid == self || pid > static_cast<std::uint32_t>(INT_MAX) || owner == 0) continue;
      if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
      if (door.owner.compare_exchange_strong(owner, origin_)) {
        door.pid.store(self);
        return bell;
      }
    }
    return no_doorbell;
  }

  void give_back_doorbell() noexcept {
    const int bell = doorbell_.exchange(no_doorbell);
    if (bell == no_doorbell) {
      layout_->broadcast_listeners.fetch_sub(1);
      return;
    }
    auto& door = layout_->bells[bell];
    auto owner = origin_;
    if (door.owner.load() != origin_) return;  // taken over meanwhile
    door.pid.store(0);
    door.owner.compare_exchange_strong(owner, 0);
  }
#endif

  template <class Listener>
  void run(Listener& waiters, std::uint32_t seen_rung, std::uint64_t seen_cursor) {
#ifdef __linux__
    int bell = doorbell_.load();
    while (!stopping_.load()) {
      const timespec timeout{1, 0};  // a backstop for stop_watching() and a lost doorbell
      const bool timed_out = futex(word(bell), FUTEX_WAIT, seen_rung, &timeout) != 0 && errno == ETIMEDOUT;
      if (stopping_.load()) break;
      if (timed_out && (bell == no_doorbell || layout_->bells[bell].owner.load() != origin_)) {
        // Never had a doorbell, or it was taken over (we looked gone to
        // someone): claim one, and look at the ring in case a wake-up went
        // elsewhere meanwhile.
        const int claimed = claim_doorbell();
        if (bell == no_doorbell && claimed != no_doorbell) layout_->broadcast_listeners.fetch_sub(1);
        if (bell != no_doorbell && claimed == no_doorbell) layout_->broadcast_listeners.fetch_add(1);
        bell = claimed;
        doorbell_.store(bell);
        seen_rung = word(bell).load();
      } else {
        const auto rung = word(bell).load();
        if (rung == seen_rung) continue;
        seen_rung = rung;
      }
      wakeups_.fetch_add(1);
      const auto cursor = layout_->cursor.load();
      if (cursor - seen_cursor > slots) {
        waiters.notify_all();
      } else {
        for (auto index = seen_cursor; index != cursor; ++index) deliver(waiters, index);
      }
      seen_cursor = cursor;
    }
#else
    (void)waiters;
    (void)seen_rung;
    (void)seen_cursor;
#endif
  }

  template <class Listener>
  void deliver(Listener& waiters, std::uint64_t index) {
    auto& slot = layout_->ring[index % slots];
    const auto before = slot.stamp.load();
    const auto origin = slot.origin.load();
    const auto payload = slot.payload.load();
    if (before != index + 1 || slot.stamp.load() != before) {
      waiters.notify_all();  // not written yet, or already reused: wake everyone
      return;
    }
    if (origin == origin_) return;  // our own release woke our waiters already
    const auto key_hash = static_cast<std::uint32_t>(payload >> 32);
    const auto ticket = static_cast<std::uint32_t>(payload);
    waiters.notify_where([key_hash](const std::string& key) { return wake_hash(key) == key_hash; }, ticket);
  }

  void stop_watching() {
    std::lock_guard lock(mutex_);
    if (!watcher_.joinable()) return;
    stopping_.store(true);
#ifdef __linux__
    // Wakes our watcher wherever it sleeps; others find nothing new.
    const int bell = doorbell_.load();
    word(bell).fetch_add(1);
    futex(word(bell), FUTEX_WAKE, INT_MAX, nullptr);
#endif
    watcher_.join();
#ifdef __linux__
    give_back_doorbell();
#endif
  }

  Layout* layout_ = nullptr;
  const std::uint64_t origin_;
  std::atomic<int> doorbell_{no_doorbell};
  std::atomic<std::uint64_t> wakeups_{0};
  std::mutex mutex_;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

}  // namespace lockstore::detail
