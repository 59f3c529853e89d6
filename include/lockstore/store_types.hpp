// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The value types of the SessionStore: references to blobs, checkpoints,
// graph nodes, work items and claims, commit requests and reports.
#pragma once

#include "lockstore/lock_guard.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

/// A content address: the SHA-256 of a blob's bytes, as 64 lower-case hex digits.
struct BlobRef {
  std::string hash;
  friend bool operator==(const BlobRef&, const BlobRef&) = default;
};

struct GraphNode {
  std::string node_id;
  std::optional<std::string> parent_id;  ///< std::nullopt for a root
  std::string payload;
  friend bool operator==(const GraphNode&, const GraphNode&) = default;
};

struct WorkDraft {
  std::string payload;
  /// While an item with this key is pending in the session, enqueueing the
  /// same key again adds nothing and returns the pending item.
  std::optional<std::string> dedupe_key;
  std::optional<std::chrono::system_clock::time_point> not_before;
};

struct WorkItem {
  std::int64_t id;  ///< increases in enqueue order; never reused
  std::string session_id;
  std::string payload;
  std::optional<std::string> dedupe_key;
  std::uint32_t attempts;  ///< claims that took it so far
};

struct Claim {
  std::string session_id, owner, token;
  std::uint64_t fence;  ///< larger than every earlier claim's, in this file
  std::vector<WorkItem> items;
};

/// The lease a write must still hold: a guard's key and token (copied, so
/// the request does not point at the guard). Checked in the write's own
/// transaction, under the file's write lock.
struct LeaseCheck {
  std::string key;
  std::string token;
  static LeaseCheck of(const LockGuard& guard) { return LeaseCheck{guard.key().str(), guard.token()}; }
};

struct CommitRequest {
  std::string session_id;
  std::uint64_t expected_head_revision = 0;  ///< 0 before the first commit
  std::map<std::string, std::string> parts;  ///< the new checkpoint: name -> bytes
  std::vector<GraphNode> append_nodes;
  std::optional<Claim> complete_claim;
  std::vector<WorkDraft> enqueue;
  /// Kept with the new checkpoint in the session's history (any bytes, e.g.
  /// JSON): what step or source produced it.
  std::optional<std::string> metadata;
  /// A fenced commit: made only if this lease (the session lock's guard,
  /// from SqliteLock on the same file) is still live when the commit
  /// transaction holds the write lock; errc::lock_lost with nothing written
  /// otherwise. `request.lease = LeaseCheck::of(guard);`
  std::optional<LeaseCheck> lease;
};

struct CommitResult {
  std::uint64_t head_revision;
  BlobRef checkpoint_ref;
};

struct SessionHead {
  std::string session_id;
  std::uint64_t head_revision;
  BlobRef checkpoint_ref;
  std::chrono::system_clock::time_point updated_at{};  ///< when the head last moved (wall clock)
};

/// One checkpoint in a session's history (SessionStore::history).
struct CheckpointInfo {
  std::string session_id;
  std::uint64_t revision;
  BlobRef checkpoint_ref;
  /// The checkpoint this one followed: the previous revision of the same
  /// session, or, for the first revision of a fork, the revision it was
  /// forked from. std::nullopt for a session's first commit, and for a head
  /// that was already there when its file gained a history (store schema 2).
  std::optional<std::uint64_t> parent_revision;
  std::string parent_session_id;  ///< == session_id except for a fork's first revision
  std::optional<std::string> metadata;
  std::chrono::system_clock::time_point created_at;
};

/// A page of a listing: at most `limit` entries after the position
/// `cursor` names (empty: from the start). Pass a Page's `next` as the
/// cursor to go on; a cursor is opaque and stays valid while entries are
/// added or removed (entries after it are never skipped).
struct PageRequest {
  std::size_t limit = 100;
  std::string cursor;
};

template <class T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next;  ///< std::nullopt on the last page
};

/// A session's head and its checkpoint's parts (name -> bytes), read from
/// one snapshot of the file.
struct SessionSnapshot {
  SessionHead head;
  std::map<std::string, std::string> parts;
};

struct Checkpoint {
  std::map<std::string, BlobRef> parts;
  friend bool operator==(const Checkpoint&, const Checkpoint&) = default;
};

struct GcReport {
  std::size_t root_count, retained_blob_count, deleted_blob_count;
};

struct StoreOptions {
  /// Run gc() after every N-th successful commit through this SessionStore.
  std::optional<std::uint64_t> gc_every_commits;
  /// How long a blob stays after it lost its last reference (a superseded
  /// checkpoint and its parts, an unpinned blob) or was stored without one
  /// (put_blob before pin): a reader still holding an older revision, or a
  /// writer between put_blob and pin, has this long. 0 (the default): gc()
  /// deletes every unreferenced blob.
  std::chrono::milliseconds gc_grace{0};
  /// How many checkpoints of each session a commit through this handle
  /// keeps in the session's history, the head included (1, the default:
  /// only the head; older ones become garbage at once). At least 1.
  std::size_t history = 1;
  /// When set, gc() first deletes every session idle (no commit) for longer
  /// than this, as delete_idle_sessions() does.
  std::optional<std::chrono::milliseconds> retention;
};

struct StoreStats {
  std::size_t sessions, blobs, pending_items;
  std::uint64_t blob_bytes;
};

}  // namespace lockstore

template <>
struct fmt::formatter<lockstore::BlobRef> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const lockstore::BlobRef& ref, FormatContext& context) const {
    return fmt::formatter<std::string_view>::format(ref.hash, context);
  }
};
