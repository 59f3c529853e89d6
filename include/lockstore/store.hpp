// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SessionStore: the durable state of agent sessions, in the same SQLite file
// (same SqliteDatabase, connection thread and schema version) as the locks.
// Head-revision compare-and-set commits; content-addressed checkpoint blobs
// with garbage collection; a leased work queue with fencing; a session graph.
// Every write is one BEGIN IMMEDIATE transaction. Needs SQLite3 and OpenSSL
// libcrypto (target lockstore::store).
#pragma once

#include "lockstore/detail/config.hpp"
#include "lockstore/detail/store_completion.hpp"
#include "lockstore/sqlite.hpp"
#include "lockstore/store_types.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

/// Every operation below is a coroutine (`co_await store.commit(request)`)
/// and also takes an Asio completion token as its last argument (a
/// callback, use_future, deferred, ...), completing with
/// `void(error_code, T)`; see detail/store_completion.hpp.
class SessionStore : public detail::StoreCompletionOverloads<SessionStore> {
  using TokenOverloads = detail::StoreCompletionOverloads<SessionStore>;

 public:
  using TokenOverloads::abandon;
  using TokenOverloads::active_path;
  using TokenOverloads::append_nodes;
  using TokenOverloads::claim;
  using TokenOverloads::commit;
  using TokenOverloads::compact;
  using TokenOverloads::complete;
  using TokenOverloads::delete_idle_sessions;
  using TokenOverloads::delete_session;
  using TokenOverloads::enqueue;
  using TokenOverloads::fork;
  using TokenOverloads::gc;
  using TokenOverloads::gc_dry_run;
  using TokenOverloads::get_blob;
  using TokenOverloads::get_checkpoint;
  using TokenOverloads::history;
  using TokenOverloads::load;
  using TokenOverloads::load_graph;
  using TokenOverloads::load_revision;
  using TokenOverloads::load_snapshot;
  using TokenOverloads::open;
  using TokenOverloads::pending;
  using TokenOverloads::pin;
  using TokenOverloads::renew;
  using TokenOverloads::sessions;
  using TokenOverloads::stats;
  using TokenOverloads::tombstone;
  using TokenOverloads::unpin;
  using TokenOverloads::vacuum;

  /// Opens the store on a database (its schema is created with the file).
  /// On a read-only database every read works and every write throws
  /// errc::backend_failure. Throws errc::invalid_argument for
  /// gc_every_commits == 0.
  static asio::awaitable<SessionStore> open(SqliteDatabase database, StoreOptions options = {});

  const SqliteDatabase& database() const noexcept;

  /// The most checkpoints StoreOptions::history may keep per session.
  static constexpr std::size_t max_history = 1'000'000;

  /// Applies the whole request in one transaction, or nothing, and adds
  /// the new checkpoint (with request.metadata) to the session's history,
  /// which keeps the last StoreOptions::history. Throws
  /// errc::head_revision_conflict (naming expected and found revisions) for
  /// a stale expected revision, errc::claim_superseded if the claim to
  /// complete no longer holds all its items, errc::invalid_argument for a
  /// duplicate or orphan graph node, an empty part name or a bad id. Parts
  /// are hashed here, on the caller's thread: not under the file's write
  /// lock, and not on the connection thread, where it would hold up this
  /// process's lease renewals. They are written into the file in pieces,
  /// without another copy in memory.
  asio::awaitable<CommitResult> commit(CommitRequest request);

  /// The session's head with its checkpoint's parts, all read from one
  /// snapshot of the file (one read transaction), so another handle's
  /// commit or gc meanwhile cannot make it inconsistent. std::nullopt for a
  /// session never committed; errc::corrupt_data when the checkpoint or a
  /// part is missing or damaged.
  asio::awaitable<std::optional<SessionSnapshot>> load_snapshot(std::string session_id);

  /// Revision `revision` of the session, from its history, read as
  /// load_snapshot reads the head (head.updated_at is when that revision
  /// was committed). std::nullopt when the history does not hold it
  /// (StoreOptions::history keeps the last ones only).
  asio::awaitable<std::optional<SessionSnapshot>> load_revision(std::string session_id, std::uint64_t revision);

  /// The session's history, newest first, a page at a time: revision,
  /// checkpoint, parent and metadata of each checkpoint it keeps.
  asio::awaitable<Page<CheckpointInfo>> history(std::string session_id, PageRequest page);

  /// Starts session `new_session_id` at revision 1 on the checkpoint of
  /// `session_id`'s revision `revision`, atomically; its history names that
  /// revision as its parent. The checkpoint is shared, not copied; the
  /// graph and the work queue are not forked. errc::invalid_argument when
  /// the history does not hold the revision, errc::head_revision_conflict
  /// when the new session exists.
  asio::awaitable<CommitResult> fork(std::string session_id, std::uint64_t revision, std::string new_session_id,
                                     std::optional<std::string> metadata);

  /// Deletes the session: head, history, graph, work items and claims, in
  /// one transaction. Its blobs are left to gc() (after the grace period).
  /// False for a session that had none of these.
  asio::awaitable<bool> delete_session(std::string session_id);

  /// Deletes, as delete_session does, every session whose head has not
  /// moved for longer than `idle` and that no live claim is working on;
  /// returns how many. Only commits (and fork) count as activity: a session
  /// that only enqueues goes too, pending items included. A session with
  /// no head (only a graph or a queue) is never idle: delete_session it.
  /// Works in transactions of at most 64 sessions. StoreOptions::retention
  /// makes gc() do this.
  asio::awaitable<std::size_t> delete_idle_sessions(std::chrono::milliseconds idle);

  static constexpr std::size_t idle_batch_sessions = 64;

  /// The session's head, or std::nullopt for a session never committed.
  asio::awaitable<std::optional<SessionHead>> load(std::string session_id);

  /// Every session's head, ordered by session id.
  asio::awaitable<std::vector<SessionHead>> sessions();

  /// A page of the sessions' heads, ordered by session id.
  asio::awaitable<Page<SessionHead>> sessions(PageRequest page);

  asio::awaitable<StoreStats> stats();

  /// Stores bytes under their SHA-256; the same bytes are stored once.
  asio::awaitable<BlobRef> put_blob(std::string bytes);

  /// The blob's bytes, or std::nullopt if absent. errc::corrupt_data if the
  /// stored bytes no longer match the hash.
  asio::awaitable<std::optional<std::string>> get_blob(BlobRef ref);

  /// The decoded manifest, or std::nullopt if absent; errc::corrupt_data if
  /// it is not a checkpoint manifest.
  asio::awaitable<std::optional<Checkpoint>> get_checkpoint(BlobRef ref);

  /// Keeps a blob (and, for a manifest, its parts) through gc(). Pins count:
  /// each pin needs its unpin. errc::invalid_argument for an unknown blob.
  asio::awaitable<void> pin(BlobRef ref);

  /// Undoes one pin; unpinning a blob that is not pinned does nothing.
  asio::awaitable<void> unpin(BlobRef ref);

  /// Deletes every blob that no session head's checkpoint (manifest and
  /// parts) and no pin has referenced for StoreOptions::gc_grace. Blobs
  /// count their references as they are committed, pinned and superseded,
  /// so gc() reads only the queue of blobs that lost their last one: its
  /// cost follows the garbage, not the store. With nothing due it reads one
  /// row; otherwise it reads the queue once, in hash order (the blobs still
  /// waiting out their grace period too), and deletes what is due, at a
  /// cost per blob that does not grow with the store (benchmarks/README).
  /// It works in batches of one short write
  /// transaction each (a few milliseconds), so locks and commits of every
  /// process go on in between. Reads no blob's bytes: a damaged blob does
  /// not stop it.
  ///
  /// With StoreOptions::retention it first deletes the sessions idle longer
  /// than that. When the WAL has grown past truncate_wal_above (it grows by
  /// what was deleted) it is truncated, if no other connection is using
  /// the file then; the
  /// database file itself keeps its size (SQLite reuses the free pages):
  /// compact() gives the space back to the file system.
  asio::awaitable<GcReport> gc();

  /// What gc() would delete now, deleting nothing: deleted_blob_count is
  /// how many blobs have been unreferenced for StoreOptions::gc_grace (with
  /// the parts only those checkpoints name), retained_blob_count the rest,
  /// root_count as gc() reports it. One read transaction, no write lock;
  /// works on a read-only database. With StoreOptions::retention, gc()
  /// first deletes idle sessions: a dry run deletes none, and the blobs
  /// they would free wait out the grace period anyway.
  asio::awaitable<GcReport> gc_dry_run();

  /// gc() truncates a WAL larger than this.
  static constexpr std::uintmax_t truncate_wal_above = 16u << 20;

  /// Gives the free space of the file back to the file system: rewrites the
  /// database (SQLite's VACUUM) and truncates the WAL. Returns the bytes the
  /// database shrank by; the file itself shrinks once the WAL is checkpointed,
  /// at once unless another connection is reading (a warning says so). It
  /// holds the file's write lock for as long as rewriting
  /// takes (about a second per few hundred MB): every lock and store
  /// operation of every process on the file waits meanwhile, so run it as
  /// maintenance, not on a schedule under load. Deleting nothing itself,
  /// it reclaims what gc(), delete_session and vacuum() freed.
  asio::awaitable<std::uint64_t> compact();

  /// At most this many queued blobs, and this much time, per GC batch.
  static constexpr std::size_t gc_batch_blobs = 512;
  static constexpr std::chrono::microseconds gc_batch_budget{8000};
  // Between batches: longer than any sleep of a busy writer, so a writer
  // waiting when a batch ends usually gets the lock before the next batch.
  static constexpr std::chrono::microseconds gc_batch_pause{2000};
  // GC checkpoints the WAL itself every few batches: a WAL grown by a long
  // GC makes every lock operation behind it slower (benchmarks/README.md).
  static constexpr std::size_t gc_checkpoint_every = 8;

  /// Adds a work item; with a dedupe key already pending, returns that item.
  asio::awaitable<WorkItem> enqueue(std::string session_id, WorkDraft draft);

  /// Takes up to max_items of the session's oldest ready items (not held by a
  /// live claim, not_before passed) under a new claim with a new token and a
  /// fence larger than every earlier claim's; std::nullopt if none is ready.
  asio::awaitable<std::optional<Claim>> claim(std::string session_id, std::string owner,
                                              std::chrono::milliseconds lease, std::size_t max_items);

  /// Extends the claim's lease to now + lease; errc::claim_superseded if
  /// another claim took any of its items.
  asio::awaitable<void> renew(const Claim& claim, std::chrono::milliseconds lease);

  /// Deletes the claim's items; errc::claim_superseded if it lost any.
  asio::awaitable<void> complete(const Claim& claim);

  /// Makes the items this claim still holds ready again at once.
  asio::awaitable<void> abandon(const Claim& claim);

  /// Items of the session not yet completed (claimed or not), oldest first.
  asio::awaitable<std::vector<WorkItem>> pending(std::string session_id);

  /// A page of pending(session_id).
  asio::awaitable<Page<WorkItem>> pending(std::string session_id, PageRequest page);

  /// Appends nodes in order; a node's parent must already exist in the
  /// session (or come earlier in `nodes`). errc::invalid_argument for a
  /// duplicate node id or an unknown parent; nothing is appended then.
  asio::awaitable<void> append_nodes(std::string session_id, std::vector<GraphNode> nodes);

  /// The session's live (not tombstoned) nodes in insertion order.
  asio::awaitable<std::vector<GraphNode>> load_graph(std::string session_id);

  /// A page of load_graph(session_id).
  asio::awaitable<Page<GraphNode>> load_graph(std::string session_id, PageRequest page);

  /// The path from the root to `leaf_id`, root first, without tombstoned
  /// nodes; empty for an unknown leaf. One recursive query.
  asio::awaitable<std::vector<GraphNode>> active_path(std::string session_id, std::string leaf_id);

  /// Hides nodes from load_graph and active_path; returns how many were
  /// newly tombstoned (unknown or already tombstoned ids count 0).
  asio::awaitable<std::size_t> tombstone(std::string session_id, std::vector<std::string> node_ids);

  /// Deletes the tombstoned nodes of every session that no live node needs
  /// on its path (whole tombstoned subtrees); returns how many. A
  /// tombstoned node with a live descendant stays until that one goes too.
  asio::awaitable<std::size_t> vacuum();

 private:
  struct State;

  SessionStore(SqliteDatabase database, StoreOptions options);

  SqliteDatabase database_;
  StoreOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/store.ipp"
#endif
