// SessionStore against real SQLite files: commits, blobs and GC, the work
// queue, the graph, typed use, read-only use and schema migration.
#include "support/helpers.hpp"
#include "support/store_helpers.hpp"

#include <catch2/catch.hpp>
#include <lockstore/store.hpp>
#include <lockstore/typed_store.hpp>
#include <sqlite3.h>

#include <boost/asio/use_future.hpp>

#include <future>
#include <thread>
#include <utility>

namespace lockstore::test {

using namespace std::chrono_literals;

namespace {

WorkDraft draft(std::string payload, std::optional<std::string> dedupe = std::nullopt) {
  WorkDraft result;
  result.payload = std::move(payload);
  result.dedupe_key = std::move(dedupe);
  return result;
}

}  // namespace

TEST_CASE("a commit moves the head by one and its checkpoint holds the parts", "[store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    auto unknown = co_await store.load("nobody");
    CHECK_FALSE(unknown.has_value());

    auto request = request_for("s1", 0, "hello");
    request.parts.emplace("notes", std::string("line\n\0binary", 12));
    const auto first = co_await store.commit(request);
    CHECK(first.head_revision == 1);
    auto head = co_await store.load("s1");
    REQUIRE(head.has_value());
    CHECK(head->head_revision == 1);
    CHECK(head->checkpoint_ref == first.checkpoint_ref);

    auto checkpoint = co_await store.get_checkpoint(first.checkpoint_ref);
    REQUIRE(checkpoint.has_value());
    REQUIRE(checkpoint->parts.size() == 2);
    auto notes = co_await store.get_blob(checkpoint->parts.at("notes"));
    CHECK(notes == std::string("line\n\0binary", 12));

    const auto second = co_await store.commit(request_for("s1", 1, "world"));
    CHECK(second.head_revision == 2);
    auto sessions = co_await store.sessions();
    REQUIRE(sessions.size() == 1);
    CHECK(sessions[0].head_revision == 2);
  });
}

TEST_CASE("a stale expected revision throws head_revision_conflict naming both revisions", "[store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    co_await store.commit(request_for("s", 0, "a"));
    co_await store.commit(request_for("s", 1, "b"));
    auto error = co_await error_of([&] { return store.commit(request_for("s", 1, "stale")); });
    REQUIRE(error.has_value());
    CHECK(error->code() == errc::head_revision_conflict);
    CHECK_THAT(error->what(), Catch::Contains("expected head revision 1") && Catch::Contains("found 2"));
    auto head = co_await store.load("s");
    CHECK(head->head_revision == 2);
  });
}

TEST_CASE("store operations complete through use_future from a thread that runs no io_context and a callback "
          "gets a stale commit's error code", "[store][tokens]") {
  TempDir dir;
  asio::io_context context;  // only for opening the database
  auto work = asio::make_work_guard(context);
  std::thread runner([&] { context.run(); });
  std::optional<std::uint64_t> first_revision;
  std::optional<std::uint64_t> loaded_revision;
  std::optional<std::size_t> claimed_items;
  std::optional<std::size_t> pending_after_complete;
  std::optional<boost::system::error_code> stale_code;
  std::optional<std::uint64_t> stale_value;
  std::optional<boost::system::error_code> superseded_code;
  std::exception_ptr failure;
  try {
    std::optional<SqliteDatabase> database;
    auto open_database = [&]() -> asio::awaitable<void> {
      database.emplace(co_await SqliteDatabase::open(dir / "store.db"));
    };
    asio::co_spawn(context, open_database(), asio::use_future).get();
    auto store = SessionStore::open(*database, StoreOptions{}, asio::use_future).get();
    REQUIRE(store.has_value());
    first_revision = store->commit(request_for("s", 0, "a"), asio::use_future).get().head_revision;
    loaded_revision = store->load("s", asio::use_future).get().value().head_revision;

    WorkDraft work_draft;
    work_draft.payload = "job";
    store->enqueue("s", work_draft, asio::use_future).get();
    std::optional<Claim> claim = store->claim("s", "worker", 30s, 10, asio::use_future).get();
    REQUIRE(claim.has_value());
    claimed_items = claim->items.size();
    // The operation owns a copy of the claim: the caller's may go at once.
    auto completing = store->complete(*claim, asio::use_future);
    const Claim completed = *claim;
    claim.reset();
    completing.get();
    pending_after_complete = store->pending("s", asio::use_future).get().size();

    // A callback on this thread's io_context: the error arrives as a code.
    std::promise<std::pair<boost::system::error_code, CommitResult>> stale;
    store->commit(request_for("s", 0, "stale"), [&](boost::system::error_code code, CommitResult result) {
      stale.set_value({code, result});
    });
    auto [code, result] = stale.get_future().get();
    stale_code = code;
    stale_value = result.head_revision;
    // Completing the same claim twice: claim_superseded, as a code.
    std::promise<boost::system::error_code> second;
    store->complete(completed, [&](boost::system::error_code second_code) { second.set_value(second_code); });
    superseded_code = second.get_future().get();
  } catch (...) {
    failure = std::current_exception();
  }
  work.reset();
  runner.join();
  if (failure) std::rethrow_exception(failure);
  CHECK(first_revision == 1u);
  CHECK(loaded_revision == 1u);
  CHECK(claimed_items == 1u);
  CHECK(pending_after_complete == 0u);
  REQUIRE(stale_code.has_value());
  CHECK(*stale_code == errc::head_revision_conflict);
  CHECK(stale_value == 0u);
  REQUIRE(superseded_code.has_value());
  CHECK(*superseded_code == errc::claim_superseded);
}

TEST_CASE("compare-and-set across two connections: exactly one winner", "[store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> { co_await open_store(dir / "store.db"); });
  std::atomic<int> wins{0}, conflicts{0}, others{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i)
    threads.emplace_back([&, i] {
      try {
        run([&]() -> asio::awaitable<void> {
          auto store = co_await open_store(dir / "store.db");  // its own connection
          co_await store.commit(request_for("race", 0, fmt::format("writer {}", i)));
        });
        ++wins;
      } catch (const Error& error) {
        (error.code() == errc::head_revision_conflict ? conflicts : others)++;
      }
    });
  for (auto& thread : threads) thread.join();
  CHECK(wins == 1);
  CHECK(conflicts == 1);
  CHECK(others == 0);
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    auto head = co_await store.load("race");
    CHECK(head->head_revision == 1);
  });
}

TEST_CASE("a commit that fails midway leaves nothing behind", "[store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    CommitRequest base = request_for("s", 0, "base");
    GraphNode root{"root", std::nullopt, "r"};
    base.append_nodes.push_back(root);
    co_await store.commit(base);
    co_await store.enqueue("s", draft("job"));
    const auto before = co_await store.stats();

    // A stale revision, a duplicate node, a superseded claim: each carries new
    // parts, nodes and drafts that must not appear.
    auto stale = request_for("s", 0, "new bytes 1");
    stale.enqueue.push_back(draft("extra"));
    auto duplicate = request_for("s", 1, "new bytes 2");
    GraphNode fresh{"fresh", std::string("root"), "f"};
    duplicate.append_nodes.push_back(fresh);
    duplicate.append_nodes.push_back(root);
    duplicate.enqueue.push_back(draft("extra"));
    auto claimed = co_await store.claim("s", "worker", 20ms, 1);
    REQUIRE(claimed);
    co_await sleep_for(40ms);
    auto thief = co_await store.claim("s", "thief", 10s, 1);
    REQUIRE(thief);
    auto superseded = request_for("s", 1, "new bytes 3");
    superseded.complete_claim = *claimed;
    superseded.enqueue.push_back(draft("extra"));

    const std::vector<std::pair<CommitRequest*, errc>> failing = {
        {&stale, errc::head_revision_conflict},
        {&duplicate, errc::invalid_argument},
        {&superseded, errc::claim_superseded}};
    for (const auto& [request, expected] : failing) {
      auto error = co_await error_of([&, request = request] { return store.commit(*request); });
      REQUIRE(error.has_value());
      CHECK(error->code() == expected);
    }
    const auto after = co_await store.stats();
    CHECK(after.blobs == before.blobs);
    CHECK(after.blob_bytes == before.blob_bytes);
    CHECK(after.pending_items == before.pending_items);
    auto graph = co_await store.load_graph("s");
    CHECK(graph.size() == 1);
    auto head = co_await store.load("s");
    CHECK(head->head_revision == 1);
  });
}

TEST_CASE("the same bytes are stored once under their SHA-256", "[store][blobs]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    const auto first = co_await store.put_blob("abc");
    const auto second = co_await store.put_blob("abc");
    CHECK(first.hash == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(first == second);
    const auto stats = co_await store.stats();
    CHECK(stats.blobs == 1);
    CHECK(stats.blob_bytes == 3);
    const BlobRef unknown{std::string(64, '0')};  // braced temporaries stay out of co_await statements
    auto absent = co_await store.get_blob(unknown);
    CHECK_FALSE(absent.has_value());
    auto bad = co_await error_of([&] { return store.get_blob(BlobRef{"not-a-hash"}); });
    REQUIRE(bad.has_value());
    CHECK(bad->code() == errc::invalid_argument);
  });
}

TEST_CASE("gc keeps live checkpoints and pins and deletes orphans", "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    auto first = request_for("s", 0, "v1");
    first.parts.emplace("shared", "same in both");
    const auto old_checkpoint = co_await store.commit(first);
    auto second = request_for("s", 1, "v2");
    second.parts.emplace("shared", "same in both");
    const auto live = co_await store.commit(second);
    const auto orphan = co_await store.put_blob("orphan");
    const auto pinned = co_await store.put_blob("pinned");
    co_await store.pin(pinned);

    // A dry run reports the same and deletes nothing.
    const auto preview = co_await store.gc_dry_run();
    CHECK(preview.root_count == 2);
    CHECK(preview.retained_blob_count == 4);
    CHECK(preview.deleted_blob_count == 3);
    const auto before = co_await store.stats();
    CHECK(before.blobs == 7);
    auto still_there = co_await store.get_blob(orphan);
    CHECK(still_there.has_value());

    const auto report = co_await store.gc();
    CHECK(report.root_count == 2);            // one head, one pin
    CHECK(report.retained_blob_count == 4);   // manifest, "v2", "same in both", pinned
    CHECK(report.deleted_blob_count == 3);    // old manifest, "v1", orphan
    auto gone = co_await store.get_blob(orphan);
    CHECK_FALSE(gone.has_value());
    auto old_manifest = co_await store.get_checkpoint(old_checkpoint.checkpoint_ref);
    CHECK_FALSE(old_manifest.has_value());
    auto checkpoint = co_await store.get_checkpoint(live.checkpoint_ref);
    REQUIRE(checkpoint.has_value());
    for (const auto& [name, ref] : checkpoint->parts) {
      auto bytes = co_await store.get_blob(ref);
      CHECK(bytes.has_value());
    }

    // A pinned checkpoint keeps its parts after its session moves on.
    co_await store.pin(live.checkpoint_ref);
    co_await store.unpin(pinned);
    co_await store.commit(request_for("s", 2, "v3"));
    co_await store.gc();
    auto kept = co_await store.get_checkpoint(live.checkpoint_ref);
    REQUIRE(kept.has_value());
    auto kept_part = co_await store.get_blob(kept->parts.at("state"));
    CHECK(kept_part == "v2");
    auto unpinned = co_await store.get_blob(pinned);
    CHECK_FALSE(unpinned.has_value());
    auto unknown_pin = co_await error_of([&] { return store.pin(orphan); });
    REQUIRE(unknown_pin.has_value());
    CHECK(unknown_pin->code() == errc::invalid_argument);
    const auto bookkeeping = co_await gc_bookkeeping_errors(store);
    CHECK(bookkeeping.empty());
  });
}

TEST_CASE("a damaged manifest of one session stops neither gc nor another session's commits", "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    StoreOptions options;
    options.gc_every_commits = 1;
    auto store = co_await open_store(dir / "store.db", options);
    const auto damaged = co_await store.commit(request_for("broken", 0, "v1"));
    co_await store.commit(request_for("healthy", 0, "v1"));
    auto corrupt_manifest = [hash = damaged.checkpoint_ref.hash](detail::SqliteConnection& connection) {
      static constexpr const char* corrupt =
          "UPDATE lockstore_blob_bytes SET bytes = X'00FF00' WHERE id = (SELECT id FROM lockstore_blobs WHERE hash = ?1)";
      connection.prepare(corrupt).bind(1, hash).run();
    };
    auto corrupting = detail::run_on(store.database(), std::move(corrupt_manifest));
    co_await std::move(corrupting);
    const auto orphan = co_await store.put_blob("orphan");
    for (std::uint64_t revision = 1; revision <= 3; ++revision) {
      const auto next = co_await store.commit(request_for("healthy", revision, fmt::format("v{}", revision + 1)));
      CHECK(next.head_revision == revision + 1);
    }
    auto gone = co_await store.get_blob(orphan);
    CHECK_FALSE(gone.has_value());  // the automatic collections ran
    const auto report = co_await store.gc();
    CHECK(report.deleted_blob_count == 0);
    // The damaged checkpoint's parts are still there: it is still a head.
    auto corrupt = co_await error_of([&] { return store.load_snapshot("broken"); });
    REQUIRE(corrupt.has_value());
    CHECK(corrupt->code() == errc::corrupt_data);
  });
}

TEST_CASE("an automatic gc that fails leaves the commit applied and reported as such", "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    StoreOptions options;
    options.gc_every_commits = 1;
    auto store = co_await open_store(dir / "store.db", options);
    co_await store.commit(request_for("s", 0, "v1"));
    // Every delete from the blob table fails from now on, as on a full disk.
    auto break_deletes = [](detail::SqliteConnection& connection) {
      connection.exec("CREATE TRIGGER break_gc BEFORE DELETE ON lockstore_blobs "
                      "BEGIN SELECT RAISE(ABORT, 'simulated: disk full'); END");
    };
    auto breaking = detail::run_on(store.database(), std::move(break_deletes));
    co_await std::move(breaking);
    for (std::uint64_t revision = 1; revision <= 3; ++revision) {
      const auto next = co_await store.commit(request_for("s", revision, fmt::format("v{}", revision + 1)));
      CHECK(next.head_revision == revision + 1);
    }
    auto head = co_await store.load("s");
    REQUIRE(head.has_value());
    CHECK(head->head_revision == 4);
    auto explicit_gc = co_await error_of([&] { return store.gc(); });
    REQUIRE(explicit_gc.has_value());  // an explicit gc() reports what stopped it
    CHECK_THAT(explicit_gc->what(), Catch::Contains("disk full"));
  });
}

TEST_CASE("a typed load reads head and state from one snapshot while another handle commits and collects",
          "[store][typed][gc]") {
  TempDir dir;
  const auto path = dir / "store.db";
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(path);
    co_await store.commit(request_for("s", 0, "state-0"));
  });
  std::atomic<bool> done{false};
  std::thread writer([&] {
    run([&]() -> asio::awaitable<void> {
      StoreOptions options;
      options.gc_every_commits = 1;
      auto store = co_await open_store(path, options);  // its own handle: its own connection
      for (std::uint64_t revision = 1; revision <= 150; ++revision)
        co_await store.commit(request_for("s", revision, fmt::format("state-{}", revision)));
      done = true;
    });
  });
  std::size_t loads = 0;
  std::optional<std::string> failure;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(path);
    TypedSessionStore<std::string, StringCodec> typed(store);
    while (!done && !failure) {
      try {
        auto loaded = co_await typed.load("s");
        if (!loaded) failure = "no head";
        else if (loaded->state != fmt::format("state-{}", loaded->head.head_revision - 1))
          failure = fmt::format("revision {} with state '{}'", loaded->head.head_revision, loaded->state);
      } catch (const Error& error) {
        failure = error.what();
      }
      ++loads;
    }
  });
  writer.join();
  INFO("after " << loads << " loads");
  CHECK_FALSE(failure.has_value());
  if (failure) FAIL(*failure);
  CHECK(loads > 10);
}

TEST_CASE("with a grace period, a superseded checkpoint and a blob not yet pinned outlive gc", "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    StoreOptions patient;
    patient.gc_grace = 60s;
    auto store = co_await open_store(dir / "store.db", patient);
    const auto old_checkpoint = co_await store.commit(request_for("s", 0, "v1"));
    co_await store.commit(request_for("s", 1, "v2"));
    const auto fresh = co_await store.put_blob("to be pinned");
    const auto first = co_await store.gc();
    CHECK(first.deleted_blob_count == 0);
    // A reader that loaded revision 1 can still read all of it.
    auto old_manifest = co_await store.get_checkpoint(old_checkpoint.checkpoint_ref);
    REQUIRE(old_manifest.has_value());
    auto old_state = co_await store.get_blob(old_manifest->parts.at("state"));
    CHECK(old_state == "v1");
    co_await store.pin(fresh);  // a gc between put_blob and pin took nothing

    // Without a grace period the same file's garbage goes at once.
    auto hasty = co_await SessionStore::open(store.database());
    const auto second = co_await hasty.gc();
    CHECK(second.deleted_blob_count == 2);  // the old manifest and "v1"
    CHECK(second.retained_blob_count == 3);  // the head's manifest, "v2", the pinned blob
    auto kept = co_await hasty.get_blob(fresh);
    CHECK(kept.has_value());

    StoreOptions wrong;
    wrong.gc_grace = -1ms;
    auto refused = co_await error_of([&] { return SessionStore::open(store.database(), wrong); });
    REQUIRE(refused.has_value());
    CHECK(refused->code() == errc::invalid_argument);
    CHECK_THAT(refused->what(), Catch::Contains("gc_grace"));
  });
}

TEST_CASE("the grace period counts from a blob's own last use, and a drifted count never deletes a needed blob",
          "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    StoreOptions patient;
    patient.gc_grace = 60s;
    auto store = co_await open_store(dir / "store.db", patient);
    const auto first = co_await store.commit(request_for("s", 0, "X"));
    co_await store.commit(request_for("s", 1, "Y"));
    // Two minutes pass (written into the file): the first manifest and its
    // part "X" are long past their grace period...
    auto age = [](detail::SqliteConnection& connection) {
      connection.exec("UPDATE lockstore_gc_queue SET since_ms = since_ms - 120000; "
                      "UPDATE lockstore_blobs SET touched_ms = touched_ms - 120000");
    };
    auto aging = detail::run_on(store.database(), std::move(age));
    co_await std::move(aging);
    // ...when a writer stores "X" again, to pin it.
    const auto again = co_await store.put_blob("X");
    const auto report = co_await store.gc();
    CHECK(report.deleted_blob_count == 1);  // the old manifest only
    auto old_manifest = co_await store.get_blob(first.checkpoint_ref);
    CHECK_FALSE(old_manifest.has_value());
    co_await store.pin(again);  // "X" is still there
    auto pinned = co_await store.get_blob(again);
    CHECK(pinned == "X");

    // A count that says 0 while a head still names the blob (as a file
    // written meanwhile by a lockstore that did not count would have).
    auto head = co_await store.load("s");
    REQUIRE(head.has_value());
    auto drift = [hash = head->checkpoint_ref.hash](detail::SqliteConnection& connection) {
      connection.prepare("UPDATE lockstore_blobs SET refs = 0 WHERE hash = ?1").bind(1, hash).run();
      connection.prepare("INSERT OR REPLACE INTO lockstore_gc_queue VALUES (?1, 0)").bind(1, hash).run();
    };
    auto drifting = detail::run_on(store.database(), std::move(drift));
    co_await std::move(drifting);
    auto hasty = co_await SessionStore::open(store.database());
    const auto after_drift = co_await hasty.gc();
    CHECK(after_drift.deleted_blob_count == 0);
    auto snapshot = co_await hasty.load_snapshot("s");
    REQUIRE(snapshot.has_value());
    CHECK(snapshot->parts.at("state") == "Y");
    const auto bookkeeping = co_await gc_bookkeeping_errors(store);
    CHECK(bookkeeping.empty());  // the count was set right again
  });
}

TEST_CASE("gc works in short batches: a lock operation on another connection never waits for the whole collection",
          "[store][gc]") {
  TempDir dir;
  const auto path = dir / "store.db";
  constexpr int orphans = 20'000;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(path);
    co_await store.commit(request_for("s", 0, "live"));
    // Orphans written in one statement (as put_blob leaves them: no
    // reference, queued for collection), to keep the test quick.
    auto make_orphans = [count = orphans](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      connection.exec(fmt::format(
          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {0}) "
          "INSERT INTO lockstore_blobs (hash, size, bytes) SELECT printf('%064x', i), 16, randomblob(16) FROM n; "
          "INSERT INTO lockstore_gc_queue (hash, since_ms) SELECT hash, 0 FROM lockstore_blobs WHERE refs = 0; "
          "UPDATE lockstore_counters SET value = value + {0} WHERE name = 'blobs';",
          count));
      transaction.commit();
    };
    auto making = detail::run_on(store.database(), std::move(make_orphans));
    co_await std::move(making);
  });
  std::atomic<bool> collecting{true};
  std::chrono::steady_clock::duration gc_took{};
  std::size_t deleted = 0;
  std::thread collector([&] {
    run([&]() -> asio::awaitable<void> {
      auto store = co_await open_store(path);
      const auto started = std::chrono::steady_clock::now();
      const auto report = co_await store.gc();
      gc_took = std::chrono::steady_clock::now() - started;
      deleted = report.deleted_blob_count;
      collecting = false;
    });
  });
  std::chrono::steady_clock::duration longest{};
  int operations = 0;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);  // another connection, as another process
    SqliteLock lock(database, "bystander");
    while (collecting) {
      const auto asked = std::chrono::steady_clock::now();
      auto guard = co_await lock.try_acquire(AdvisoryKey("during-gc"), 30s);
      REQUIRE(guard);
      co_await lock.release(std::move(*guard));
      longest = std::max(longest, std::chrono::steady_clock::now() - asked);
      ++operations;
    }
  });
  collector.join();
  CHECK(deleted == static_cast<std::size_t>(orphans));
  const auto ms = [](auto duration) { return std::chrono::duration_cast<std::chrono::milliseconds>(duration).count(); };
  INFO("gc took " << ms(gc_took) << " ms; " << operations << " lock operations, the longest " << ms(longest) << " ms");
  // One transaction for the whole collection would make some operation wait
  // about as long as the collection itself.
  CHECK(operations > 1);
  CHECK(longest < gc_took / 2);
}

TEST_CASE("a version 3 store is migrated: reference counts are computed from heads, pins and manifests",
          "[store][files][gc]") {
  TempDir dir;
  const auto path = dir / "v3.db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    for (const char* script : {detail::schema_v1, detail::schema_v2, detail::schema_v3})
      REQUIRE(sqlite3_exec(db, script, nullptr, nullptr, nullptr) == SQLITE_OK);
    // What lockstore 0.3 wrote for: a head whose manifest names one part, a
    // pinned blob, and an orphan.
    const char* data = R"sql(
      INSERT INTO lockstore_blobs (hash, size, bytes) VALUES
        ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, X'01'),
        ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 1, X'02'),
        ('cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', 1, X'03'),
        ('dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd', 1, X'04');
      INSERT INTO lockstore_blob_parts VALUES
        ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
         'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb');
      INSERT INTO lockstore_sessions VALUES ('s', 1, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 0);
      INSERT INTO lockstore_pins VALUES ('cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', 2);
      PRAGMA user_version = 3;)sql";
    REQUIRE(sqlite3_exec(db, data, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(path);
    const auto report = co_await store.gc();
    CHECK(report.deleted_blob_count == 1);  // only the orphan
    CHECK(report.retained_blob_count == 3);
    CHECK(report.root_count == 2);
    const BlobRef pinned{std::string(64, 'c')};
    co_await store.unpin(pinned);
    const auto still = co_await store.gc();
    CHECK(still.deleted_blob_count == 0);  // pinned twice
    co_await store.unpin(pinned);
    const auto then = co_await store.gc();
    CHECK(then.deleted_blob_count == 1);
  });
}

TEST_CASE("gc_every_commits runs gc on its schedule", "[store][gc]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    StoreOptions options;
    options.gc_every_commits = 2;
    auto store = co_await open_store(dir / "store.db", options);
    co_await store.put_blob("orphan");
    co_await store.commit(request_for("s", 0, "v1"));
    auto after_one = co_await store.stats();
    CHECK(after_one.blobs == 3);  // orphan, manifest, v1
    co_await store.commit(request_for("s", 1, "v2"));
    auto after_two = co_await store.stats();
    CHECK(after_two.blobs == 2);  // manifest, v2
  });
}

TEST_CASE("claims take the oldest ready items with increasing fences", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    for (int i = 0; i < 3; ++i) co_await store.enqueue("s", draft(fmt::format("job {}", i)));
    WorkDraft later = draft("later");
    later.not_before = std::chrono::system_clock::now() + 1h;
    co_await store.enqueue("s", later);

    auto first = co_await store.claim("s", "w1", 10s, 2);
    REQUIRE(first.has_value());
    REQUIRE(first->items.size() == 2);
    CHECK(first->items[0].payload == "job 0");
    CHECK(first->items[1].payload == "job 1");
    CHECK(first->items[0].attempts == 1);
    auto second = co_await store.claim("s", "w2", 10s, 5);
    REQUIRE(second.has_value());
    REQUIRE(second->items.size() == 1);  // "later" is not ready
    CHECK(second->items[0].payload == "job 2");
    CHECK(second->fence > first->fence);
    CHECK(second->token != first->token);
    auto none = co_await store.claim("s", "w3", 10s, 5);
    CHECK_FALSE(none.has_value());

    co_await store.abandon(*second);
    auto again = co_await store.claim("s", "w3", 10s, 5);
    REQUIRE(again.has_value());
    CHECK(again->items[0].payload == "job 2");
    CHECK(again->items[0].attempts == 2);
    CHECK(again->fence > second->fence);

    co_await store.renew(*first, 10s);
    co_await store.complete(*first);
    auto left = co_await store.pending("s");
    REQUIRE(left.size() == 2);
    CHECK(left[0].payload == "job 2");
    CHECK(left[1].payload == "later");
  });
}

TEST_CASE("a superseded claim can neither renew nor complete, and the winner can", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    co_await store.enqueue("s", draft("only"));
    auto stale = co_await store.claim("s", "slow", 20ms, 1);
    REQUIRE(stale);
    co_await sleep_for(40ms);
    auto winner = co_await store.claim("s", "fast", 10s, 1);
    REQUIRE(winner);
    CHECK(winner->fence > stale->fence);
    for (const bool completing : {false, true}) {
      auto error = co_await error_of([&]() -> asio::awaitable<void> {
        if (completing) {
          co_await store.complete(*stale);
        } else {
          co_await store.renew(*stale, 10s);
        }
      });
      REQUIRE(error.has_value());
      CHECK(error->code() == errc::claim_superseded);
      CHECK_THAT(error->what(), Catch::Contains(fmt::format("fence {}", stale->fence)));
    }
    co_await store.renew(*winner, 10s);
    co_await store.complete(*winner);
    auto left = co_await store.pending("s");
    CHECK(left.empty());
  });
}

TEST_CASE("an expired claim nobody took still completes", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    co_await store.enqueue("s", draft("slow job"));
    auto claim = co_await store.claim("s", "slow", 10ms, 1);
    REQUIRE(claim);
    co_await sleep_for(30ms);
    co_await store.complete(*claim);
    auto left = co_await store.pending("s");
    CHECK(left.empty());
  });
}

TEST_CASE("a dedupe key makes a second enqueue return the pending item", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    const auto first = co_await store.enqueue("s", draft("one", "key-1"));
    const auto second = co_await store.enqueue("s", draft("two", "key-1"));
    CHECK(second.id == first.id);
    CHECK(second.payload == "one");
    const auto other_session = co_await store.enqueue("t", draft("three", "key-1"));
    CHECK(other_session.id != first.id);
    auto pending = co_await store.pending("s");
    CHECK(pending.size() == 1);
  });
}

TEST_CASE("a dedupe key never folds new work into an item a claim holds", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    const auto first = co_await store.enqueue("s", draft("one", "key-1"));
    auto claim = co_await store.claim("s", "worker", 30s, 10);
    REQUIRE(claim.has_value());
    // Being processed: the worker may complete it without seeing "two".
    const auto second = co_await store.enqueue("s", draft("two", "key-1"));
    CHECK(second.id != first.id);
    CHECK(second.payload == "two");
    const auto third = co_await store.enqueue("s", draft("three", "key-1"));
    CHECK(third.id == second.id);  // folds into the unclaimed one
    co_await store.complete(*claim);
    auto pending = co_await store.pending("s");
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].payload == "two");

    // An abandoned item folds into the newer one with its key.
    auto retry = co_await store.claim("s", "worker", 30s, 10);
    REQUIRE(retry.has_value());
    const auto newer = co_await store.enqueue("s", draft("four", "key-1"));
    CHECK(newer.id != second.id);
    co_await store.abandon(*retry);
    auto left = co_await store.pending("s");
    REQUIRE(left.size() == 1);
    CHECK(left[0].id == newer.id);
  });
}

TEST_CASE("a commit completes a claim and enqueues work atomically", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    co_await store.enqueue("s", draft("turn 1"));
    auto claim = co_await store.claim("s", "agent", 10s, 1);
    REQUIRE(claim);
    auto request = request_for("s", 0, "after turn 1");
    request.complete_claim = *claim;
    request.enqueue.push_back(draft("turn 2"));
    const auto result = co_await store.commit(request);
    CHECK(result.head_revision == 1);
    auto pending = co_await store.pending("s");
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].payload == "turn 2");
  });
}

TEST_CASE("racing claims on two connections never share an item", "[store][queue]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    for (int i = 0; i < 40; ++i) co_await store.enqueue("s", draft(fmt::format("{}", i)));
  });
  std::mutex mutex;
  std::vector<std::int64_t> claimed;
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      try {
        run([&]() -> asio::awaitable<void> {
          auto store = co_await open_store(dir / "store.db");
          for (;;) {
            auto claim = co_await store.claim("s", fmt::format("w{}", t), 10s, 1);
            if (!claim) co_return;
            {
              std::lock_guard lock(mutex);
              for (const auto& item : claim->items) claimed.push_back(item.id);
            }
            co_await store.complete(*claim);
          }
        });
      } catch (const std::exception& error) {
        errors[static_cast<std::size_t>(t)] = error.what();
      }
    });
  for (auto& thread : threads) thread.join();
  for (const auto& error : errors) CHECK(error.empty());
  std::sort(claimed.begin(), claimed.end());
  CHECK(claimed.size() == 40);
  CHECK(std::adjacent_find(claimed.begin(), claimed.end()) == claimed.end());
}

TEST_CASE("the graph keeps insertion order, walks the active path and hides tombstones", "[store][graph]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    std::vector<GraphNode> nodes;
    nodes.push_back(GraphNode{"root", std::nullopt, "r"});
    nodes.push_back(GraphNode{"a", std::string("root"), "a"});
    nodes.push_back(GraphNode{"b", std::string("a"), "b"});
    nodes.push_back(GraphNode{"branch", std::string("root"), "x"});
    nodes.push_back(GraphNode{"c", std::string("b"), "c"});
    co_await store.append_nodes("s", nodes);

    auto graph = co_await store.load_graph("s");
    REQUIRE(graph.size() == 5);
    CHECK(graph[3].node_id == "branch");
    auto path = co_await store.active_path("s", "c");
    REQUIRE(path.size() == 4);
    CHECK(path[0].node_id == "root");
    CHECK(path[1].node_id == "a");
    CHECK(path[3].node_id == "c");
    CHECK(path[3].parent_id == std::optional<std::string>("b"));

    std::vector<GraphNode> duplicate{GraphNode{"a", std::nullopt, "again"}};
    auto dup = co_await error_of([&] { return store.append_nodes("s", duplicate); });
    REQUIRE(dup.has_value());
    CHECK(dup->code() == errc::invalid_argument);
    CHECK_THAT(dup->what(), Catch::Contains("'a'") && Catch::Contains("already exists"));
    std::vector<GraphNode> orphan{GraphNode{"z", std::string("missing"), ""}};
    auto orphaned = co_await error_of([&] { return store.append_nodes("s", orphan); });
    REQUIRE(orphaned.has_value());
    CHECK(orphaned->code() == errc::invalid_argument);
    std::vector<GraphNode> other_session{GraphNode{"a", std::nullopt, "separate"}};
    co_await store.append_nodes("t", other_session);  // node ids are per session

    std::vector<std::string> hide{"b", "branch", "nope"};
    const auto hidden = co_await store.tombstone("s", hide);
    CHECK(hidden == 2);
    auto visible = co_await store.load_graph("s");
    CHECK(visible.size() == 3);
    auto walked = co_await store.active_path("s", "c");
    REQUIRE(walked.size() == 3);  // root, a, c
    CHECK(walked[1].node_id == "a");
    // "b" is tombstoned but on live "c"'s path: it stays (walked through,
    // never returned) until "c" goes too; "branch" has no live descendant.
    const auto removed = co_await store.vacuum();
    CHECK(removed == 1);
    auto after_vacuum = co_await store.active_path("s", "c");
    CHECK(after_vacuum.size() == 3);
    std::vector<std::string> hide_leaf{"c"};
    co_await store.tombstone("s", hide_leaf);
    const auto rest = co_await store.vacuum();
    CHECK(rest == 2);  // "b" and "c"
    auto unknown = co_await store.active_path("s", "nope");
    CHECK(unknown.empty());
  });
}

TEST_CASE("a graph id deleted with children cannot come back under them, and a parent cycle is reported, not walked "
          "forever",
          "[store][graph]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    std::vector<GraphNode> nodes{GraphNode{"root", std::nullopt, "r"}, GraphNode{"a", std::string("root"), "a"},
                                 GraphNode{"b", std::string("a"), "b"}};
    co_await store.append_nodes("s", nodes);
    // What lockstore 0.3's vacuum left behind: "a" deleted, "b" still naming it.
    auto delete_a = [](detail::SqliteConnection& connection) {
      connection.exec("DELETE FROM lockstore_graph_nodes WHERE session_id = 's' AND node_id = 'a'");
    };
    auto deleting = detail::run_on(store.database(), std::move(delete_a));
    co_await std::move(deleting);
    std::vector<GraphNode> comeback{GraphNode{"a", std::string("b"), "again"}};
    auto refused = co_await error_of([&] { return store.append_nodes("s", comeback); });
    REQUIRE(refused.has_value());
    CHECK(refused->code() == errc::invalid_argument);
    CHECK_THAT(refused->what(), Catch::Contains("'a'") && Catch::Contains("parent"));

    // A cycle written into the file by hand: the walk stops and says so.
    auto make_cycle = [](detail::SqliteConnection& connection) {
      connection.exec("INSERT INTO lockstore_graph_nodes (session_id, node_id, parent_id, payload) "
                      "VALUES ('s', 'a', 'b', X'')");
    };
    auto cycling = detail::run_on(store.database(), std::move(make_cycle));
    co_await std::move(cycling);
    auto walk = co_await error_of([&] { return store.active_path("s", "b"); });
    REQUIRE(walk.has_value());
    CHECK(walk->code() == errc::corrupt_data);
    CHECK_THAT(walk->what(), Catch::Contains("cycle"));
    const auto vacuumed = co_await store.vacuum();  // terminates on the cycle too
    CHECK(vacuumed == 0);
  });
}

namespace {
struct Counter {
  std::string name;
  int value = 0;
};
// A user-defined codec: "name=value", refusing anything else.
struct CounterCodec {
  static std::string encode(const Counter& counter) { return fmt::format("{}={}", counter.name, counter.value); }
  static Counter decode(std::string_view bytes) {
    const auto equals = bytes.find('=');
    if (equals == std::string_view::npos) throw Error(errc::corrupt_data, "counter state has no '='");
    return Counter{std::string(bytes.substr(0, equals)), std::stoi(std::string(bytes.substr(equals + 1)))};
  }
};
}  // namespace

TEST_CASE("a typed store commits and loads a user's state through its codec", "[store][typed]") {
  STATIC_REQUIRE(Codec<CounterCodec, Counter>);
  STATIC_REQUIRE(Codec<StringCodec, std::string>);
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    TypedSessionStore<Counter, CounterCodec> typed(co_await open_store(dir / "store.db"));
    CommitRequest request;
    request.session_id = "s";
    const Counter counter{"turns", 7};
    co_await typed.commit(request, counter);
    auto loaded = co_await typed.load("s");
    REQUIRE(loaded.has_value());
    CHECK(loaded->state.name == "turns");
    CHECK(loaded->state.value == 7);
    CHECK(loaded->head.head_revision == 1);

    auto raw = request_for("s", 1, "no equals sign");
    co_await typed.untyped().commit(raw);
    auto error = co_await error_of([&] { return typed.load("s"); });
    REQUIRE(error.has_value());
    CHECK(error->code() == errc::corrupt_data);
  });
}

TEST_CASE("a store on a read-only open serves reads and refuses writes", "[store][files]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto writer = co_await open_store(dir / "store.db");
    co_await writer.commit(request_for("s", 0, "v1"));
    co_await writer.enqueue("s", draft("job"));

    auto reader = co_await SessionStore::open(co_await SqliteDatabase::open_readonly(dir / "store.db"));
    auto head = co_await reader.load("s");
    CHECK(head.has_value());
    auto sessions = co_await reader.sessions();
    CHECK(sessions.size() == 1);
    auto pending = co_await reader.pending("s");
    CHECK(pending.size() == 1);
    auto checkpoint = co_await reader.get_checkpoint(head->checkpoint_ref);
    CHECK(checkpoint.has_value());

    const std::vector<std::function<asio::awaitable<void>()>> writes = {
        [&]() -> asio::awaitable<void> { co_await reader.commit(request_for("s", 1, "v2")); },
        [&]() -> asio::awaitable<void> { co_await reader.enqueue("s", draft("x")); },
        [&]() -> asio::awaitable<void> { co_await reader.claim("s", "w", 10s, 1); },
        [&]() -> asio::awaitable<void> { co_await reader.gc(); },
        [&]() -> asio::awaitable<void> { co_await reader.put_blob("x"); },
        [&]() -> asio::awaitable<void> { co_await reader.vacuum(); },
    };
    for (const auto& write : writes) {
      auto error = co_await error_of(write);
      REQUIRE(error.has_value());
      CHECK(error->code() == errc::backend_failure);
      CHECK_THAT(error->what(), Catch::Contains("read-only"));
    }
  });
}

TEST_CASE("a version 1 file is migrated to the current schema and keeps its leases", "[store][files]") {
  TempDir dir;
  const auto path = dir / "v1.db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, detail::schema_v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    const auto insert = "INSERT INTO lockstore_leases VALUES ('old', 'o', 't', 41, 0, 0); PRAGMA user_version = 1";
    REQUIRE(sqlite3_exec(db, insert, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    auto version =
        co_await detail::run_on(database, [](detail::SqliteConnection& c) { return c.pragma_int("user_version"); });
    CHECK(version == detail::schema_version);
    SqliteLock lock(database, "new");
    auto guard = co_await lock.try_acquire(AdvisoryKey("old"), 5s);
    REQUIRE(guard);
    CHECK(guard->fence() > 41);  // fences never go back, through a migration too
    co_await lock.release(std::move(*guard));
    auto store = co_await SessionStore::open(database);
    co_await store.commit(request_for("s", 0, "works"));
  });
}

TEST_CASE("bad store input is refused with invalid_argument", "[store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await open_store(dir / "store.db");
    auto empty_session = co_await error_of([&] { return store.commit(request_for("", 0, "x")); });
    CHECK((empty_session && empty_session->code() == errc::invalid_argument));
    auto bad_part = request_for("s", 0, "x");
    bad_part.parts.emplace("", "unnamed");
    auto unnamed = co_await error_of([&] { return store.commit(bad_part); });
    CHECK((unnamed && unnamed->code() == errc::invalid_argument));
    auto zero_items = co_await error_of([&] { return store.claim("s", "w", 10s, 0); });
    CHECK((zero_items && zero_items->code() == errc::invalid_argument));
    auto zero_lease = co_await error_of([&] { return store.claim("s", "w", 0ms, 1); });
    CHECK((zero_lease && zero_lease->code() == errc::invalid_argument));
    StoreOptions never;
    never.gc_every_commits = 0;
    auto bad_options = co_await error_of([&] { return SessionStore::open(store.database(), never); });
    CHECK((bad_options && bad_options->code() == errc::invalid_argument));
  });
}

}  // namespace lockstore::test
