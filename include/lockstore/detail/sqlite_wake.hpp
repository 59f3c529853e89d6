// Cross-process wake-ups for SQLite waiters. Every process that opens a
// database file for writing maps a small shared file next to it,
// `<database>-lockstore-wake`, and announces there each release of a lease
// (the key's hash and the next queue ticket), then wakes the other
// processes with a futex on a sequence word in the mapping. One watcher
// thread per database handle sleeps on that futex and wakes the handle's
// waiters on the announced key. Waiters still look again on a slow timer, so
// a lost or missing announcement (another build, a full ring) costs time,
// never correctness: the database is the only authority on who holds what.
//
// Layout (one 4 KiB page, zero-filled on creation):
//   magic (u64) · sequence (u32 futex word) · pad · cursor (u64) · ring[slots]
// A publisher reserves a slot with cursor.fetch_add, writes it seqlock-style
// (stamp 0, origin, payload, stamp = index + 1), bumps the sequence and wakes
// the sleepers. A watcher that finds a slot unwritten or overwritten wakes
// all of its waiters instead (conservative). Linux only; elsewhere, and when
// the file cannot be created or mapped (read-only directory, foreign file),
// the board is inactive and waiters poll at SqliteOptions::poll_interval.
#pragma once

#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/detail/random.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#ifdef __linux__
#include <fcntl.h>
#include <linux/futex.h>
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
  static constexpr std::uint64_t magic = 0x314b41574b434f4cull;  // "LOCKWAK1", little-endian
  static constexpr std::size_t file_size = 4096;

  /// Maps `<database>-lockstore-wake`; inactive if that is not possible.
  explicit WakeBoard(const std::filesystem::path& database) : origin_(static_cast<std::uint64_t>(ThreadRandom::between(1, INT64_MAX))) {
#ifdef __linux__
    const auto path = database.string() + "-lockstore-wake";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) return;
    struct stat status {};
    if (::fstat(fd, &status) != 0 || (status.st_size != 0 && status.st_size != static_cast<off_t>(file_size)) ||
        (status.st_size == 0 && ::ftruncate(fd, static_cast<off_t>(file_size)) != 0)) {
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

  /// Announces that `key` was freed and `next_ticket` (0: unknown) is next.
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
    futex(FUTEX_WAKE, INT_MAX, nullptr);
#else
    (void)key;
    (void)next_ticket;
#endif
  }

  /// Starts the watcher thread (once) that wakes `waiters` on announcements
  /// from other handles. Returns whether the board is active; sets
  /// `*started` when this call started the thread, so that the caller can
  /// look again for a release announced before the watcher existed.
  bool watch(KeyedWaiters& waiters, bool* started = nullptr) {
    if (layout_ == nullptr) return false;
    std::lock_guard lock(mutex_);
    if (!watcher_.joinable()) {
      if (started != nullptr) *started = true;
      // The starting point is read here, not on the new thread: an
      // announcement made after watch() returns is delivered even if the
      // thread has not run yet.
      const auto sequence = layout_->sequence.load();
      const auto cursor = layout_->cursor.load();
      watcher_ = std::thread([this, &waiters, sequence, cursor] { run(waiters, sequence, cursor); });
    }
    return true;
  }

 private:
  static constexpr std::size_t slots = 160;

  struct Slot {
    std::atomic<std::uint64_t> stamp;    // index + 1 once written; 0 while being written
    std::atomic<std::uint64_t> origin;   // the publishing handle
    std::atomic<std::uint64_t> payload;  // key hash << 32 | low 32 bits of the next ticket
  };
  struct Layout {
    std::atomic<std::uint64_t> magic;
    std::atomic<std::uint32_t> sequence;  // the futex word
    std::uint32_t pad;
    std::atomic<std::uint64_t> cursor;
    Slot ring[slots];
  };
  static_assert(sizeof(Layout) <= file_size);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
                "the wake board shares atomics between processes");

#ifdef __linux__
  long futex(int operation, std::uint32_t value, const timespec* timeout) noexcept {
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&layout_->sequence), operation, value, timeout,
                     nullptr, 0);
  }
#endif

  void run(KeyedWaiters& waiters, std::uint32_t seen_sequence, std::uint64_t seen_cursor) {
#ifdef __linux__
    while (!stopping_.load()) {
      const timespec timeout{1, 0};  // only a backstop for stop_watching()
      futex(FUTEX_WAIT, seen_sequence, &timeout);
      const auto sequence = layout_->sequence.load();
      if (sequence == seen_sequence) continue;
      seen_sequence = sequence;
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
    (void)seen_sequence;
    (void)seen_cursor;
#endif
  }

  void deliver(KeyedWaiters& waiters, std::uint64_t index) {
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
    // Wakes our watcher; other processes' watchers find nothing new.
    layout_->sequence.fetch_add(1);
    futex(FUTEX_WAKE, INT_MAX, nullptr);
#endif
    watcher_.join();
  }

  Layout* layout_ = nullptr;
  const std::uint64_t origin_;
  std::mutex mutex_;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

}  // namespace lockstore::detail
