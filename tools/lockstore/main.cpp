// lockstore: run a command under a lease, and see and clear leases and
// sessions, from the shell. Built on the public API only. Exit statuses are
// in exit_codes.hpp and README "Command-line tool".
#include "arguments.hpp"
#include "exit_codes.hpp"
#include "json_output.hpp"
#include "run_command.hpp"

#include <lockstore/sqlite.hpp>
#include <lockstore/store.hpp>
#include <lockstore/version.hpp>
#ifdef LOCKSTORE_TOOL_POSTGRES
#include <lockstore/postgres.hpp>
#endif
#ifdef LOCKSTORE_TOOL_REDIS
#include <lockstore/redis.hpp>
#endif

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>


namespace {

namespace asio = boost::asio;

struct BackendUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};
using namespace lockstore;
using namespace lockstore::cli;

// Runs the coroutine `make()` to completion on this thread; returns its int.
template <class F>
int run_async(F make) {
  asio::io_context context;
  auto result = asio::co_spawn(context, make(), asio::use_future);
  context.run();
  return result.get();
}

[[noreturn]] void not_built_in(const char* name) {
  throw BackendUnavailable(fmt::format("backend '{}' is not built into this lockstore binary", name));
}

// Runs `body(lock)` to completion; `lock` outlives it.
template <class Lock, class Body>
asio::awaitable<int> run_with(Lock& lock, Body& body) {
  auto running = body(lock);
  co_return co_await std::move(running);
}

/// Connects the lock the backend URL names, for `owner`, and returns
/// `body(lock)`: one code path for every backend.
/// How a command opens a SQLite file: `run` creates it; the operator
/// commands only use one that exists (a typo must not create a file), and
/// the ones that only read open it read-only (they work on a file they may
/// not write).
enum class Open { create, existing, read_only };

/// Opens the SQLite database at `path` as `how` says.
asio::awaitable<SqliteDatabase> open_sqlite(std::filesystem::path path, Open how) {
  if (how != Open::create && !std::filesystem::exists(path))
    throw BackendUnavailable(fmt::format("no lockstore database at '{}' (nothing was locked there yet, or a typo in "
                                         "--backend?)", path.string()));
  if (how == Open::read_only) co_return co_await SqliteDatabase::open_readonly(path);
  if (how == Open::create && path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  co_return co_await SqliteDatabase::open(path);
}

template <class Body>
asio::awaitable<int> with_lock(std::string url_text, std::string owner, Body body, Open how = Open::create) {
  const auto url = parse_backend_url(url_text);
  if (url.kind == BackendUrl::Kind::sqlite) {
    auto opening = open_sqlite(url.location, how);
    SqliteLock lock(co_await std::move(opening), std::move(owner));
    co_return co_await run_with(lock, body);
  }
  if (url.kind == BackendUrl::Kind::postgres) {
#ifdef LOCKSTORE_TOOL_POSTGRES
    auto connecting = PostgresLock::connect(url.location, std::move(owner));
    auto lock = co_await std::move(connecting);
    co_return co_await run_with(lock, body);
#else
    not_built_in("postgres");
#endif
  }
#ifdef LOCKSTORE_TOOL_REDIS
  const auto parts = parse_redis_url(url.location);
  RedisOptions options;
  options.host = parts.host;
  options.port = parts.port;
  if (!parts.user.empty()) options.username = parts.user;
  if (parts.has_password) options.password = parts.password;
  options.database = parts.database;
  auto connecting = RedisLock::connect(options, std::move(owner));
  auto lock = co_await std::move(connecting);
  co_return co_await run_with(lock, body);
#else
  not_built_in("redis");
#endif
}

/// The SQLite file of the session store (the store lives only in SQLite).
std::filesystem::path store_path(const std::string& url_text) {
  const auto url = parse_backend_url(url_text);
  if (url.kind != BackendUrl::Kind::sqlite)
    throw BackendUnavailable("the session store lives in a SQLite file; `store` needs --backend sqlite:PATH");
  return url.location;
}

template <class Lock>
asio::awaitable<int> list_leases(Lock& lock, bool json) {
  const auto leases = co_await lock.list();
  const auto now = std::chrono::system_clock::now();
  const auto ms = [](auto duration) { return std::chrono::duration_cast<std::chrono::milliseconds>(duration); };
  if (json) {
    boost::json::array out;
    for (const auto& lease : leases) {
      boost::json::object entry;
      put_text(entry, "key", lease.key.str());
      put_text(entry, "owner", lease.owner);
      entry["fence"] = lease.fence;
      entry["held_for_ms"] = ms(now - lease.acquired_at).count();
      entry["expires_in_ms"] = ms(lease.expires_at - now).count();
      out.push_back(std::move(entry));
    }
    print_json(out);
    co_return exit_ok;
  }
  if (leases.empty()) {
    fmt::print("no leases held\n");
    co_return exit_ok;
  }
  fmt::print("{:<40} {:<32} {:>8} {:>10} {:>10}\n", "KEY", "OWNER", "FENCE", "HELD FOR", "EXPIRES IN");
  for (const auto& lease : leases)
    fmt::print("{:<40} {:<32} {:>8} {:>10} {:>10}\n", lease.key.str(), lease.owner, lease.fence,
               format_duration(ms(now - lease.acquired_at)), format_duration(ms(lease.expires_at - now)));
  co_return exit_ok;
}

template <class Lock>
asio::awaitable<int> force_release(Lock& lock, std::string key) {
  auto cleared = co_await lock.force_release(AdvisoryKey(key));
  if (!cleared) {
    fmt::print("no lease held on '{}'\n", key);
    co_return exit_ok;
  }
  const bool live = cleared->expires_at > std::chrono::system_clock::now();
  fmt::print("released the {} lease on '{}' held by '{}' (fence {})\n", live ? "live" : "expired", key,
             cleared->owner, cleared->fence);
  co_return exit_ok;
}

template <class Lock>
asio::awaitable<int> admit_fence_at(Lock& lock, std::string resource, std::uint64_t fence) {
  const bool admitted = co_await lock.admit(resource, fence);
  if (admitted) co_return exit_ok;
  fmt::print(stderr, "lockstore: fence {} for '{}' is refused: a larger fence was admitted before (a newer holder)\n",
             fence, resource);
  co_return exit_not_acquired;
}

asio::awaitable<int> store_command(std::filesystem::path path, std::string what, bool json, bool dry_run) {
  auto opening = open_sqlite(path, what == "gc" && !dry_run ? Open::existing : Open::read_only);
  auto store = co_await SessionStore::open(co_await std::move(opening));
  if (what == "sessions") {
    const auto heads = co_await store.sessions();
    boost::json::array out;
    if (!json) fmt::print("{:<40} {:>10} {:>12}\n", "SESSION", "REVISION", "QUEUE DEPTH");
    for (const auto& head : heads) {
      const auto depth = (co_await store.pending(head.session_id)).size();
      if (json) {
        boost::json::object entry;
        put_text(entry, "session", head.session_id);
        entry["head_revision"] = head.head_revision;
        entry["queue_depth"] = depth;
        entry["checkpoint"] = head.checkpoint_ref.hash;
        out.push_back(std::move(entry));
      } else {
        fmt::print("{:<40} {:>10} {:>12}\n", head.session_id, head.head_revision, depth);
      }
    }
    if (json) print_json(out);
  } else if (what == "stats") {
    const auto stats = co_await store.stats();
    if (json) {
      print_json({{"sessions", stats.sessions},
                  {"blobs", stats.blobs},
                  {"blob_bytes", stats.blob_bytes},
                  {"pending_items", stats.pending_items}});
    } else {
      fmt::print("sessions: {}\nblobs: {} ({} bytes)\npending items: {}\n", stats.sessions, stats.blobs,
                 stats.blob_bytes, stats.pending_items);
    }
  } else {
    auto collecting = dry_run ? store.gc_dry_run() : store.gc();
    const auto report = co_await std::move(collecting);
    if (json) {
      print_json({{"roots", report.root_count},
                  {"retained", report.retained_blob_count},
                  {dry_run ? "would_delete" : "deleted", report.deleted_blob_count}});
    } else {
      fmt::print("gc{}: {} roots, {} blobs retained, {} {}\n", dry_run ? " (dry run)" : "", report.root_count,
                 report.retained_blob_count, report.deleted_blob_count, dry_run ? "would be deleted" : "deleted");
    }
  }
  co_return exit_ok;
}

}  // namespace

/// `lockstore run --help`'s usage line, naming the command after `--`.
class RunUsage : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App*, std::string) const override {
    return "Usage: lockstore run [OPTIONS] KEY -- COMMAND [ARGS...]\n";
  }
};

/// The default backend: one SQLite file per user, the same whatever the
/// current directory ($XDG_STATE_HOME/lockstore/lockstore.db, with
/// ~/.local/state for an unset XDG_STATE_HOME). Without either variable
/// there is no such place: empty, and a command asks for --backend.
std::string default_backend() {
  const char* state = std::getenv("XDG_STATE_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path base;
  if (state != nullptr && *state == '/') base = state;
  else if (home != nullptr && *home != '\0') base = std::filesystem::path(home) / ".local" / "state";
  else return "";
  return "sqlite:" + (base / "lockstore" / "lockstore.db").string();
}

int main(int argc, char** argv) {
  // Everything after the first "--" is the command for `run`; CLI11 sees the rest.
  std::vector<std::string> own_arguments, command;
  bool saw_separator = false;
  for (int i = 1; i < argc; ++i) {
    if (!saw_separator && std::string_view(argv[i]) == "--") {
      saw_separator = true;
    } else {
      (saw_separator ? command : own_arguments).emplace_back(argv[i]);
    }
  }

  CLI::App app{"lockstore: leases with fencing tokens, and agent session stores, from the shell", "lockstore"};
  app.set_version_flag("--version", std::string("lockstore ") + LOCKSTORE_VERSION_STRING);
  app.require_subcommand(1);
  const char* from_environment = std::getenv("LOCKSTORE_BACKEND");
  std::string backend = from_environment != nullptr ? from_environment : default_backend();
  const auto add_backend = [&](CLI::App* command_app) {
    command_app->add_option("--backend", backend,
                            "sqlite:PATH, postgres://..., redis://host:port[/db] (default: $LOCKSTORE_BACKEND, else "
                            "sqlite:$XDG_STATE_HOME/lockstore/lockstore.db, ~/.local/state by default)");
  };
  add_backend(&app);  // before the command, or after it

  RunOptions run_options;
  std::string ttl = "30s", wait, kill_after = "10s", owner;
  std::optional<int> conflict_status;
  auto* run = app.add_subcommand("run", "run COMMAND while holding the lease on KEY: lockstore run [options] KEY -- COMMAND [ARGS...]");
  add_backend(run);
  // CLI11 cannot show the COMMAND after `--` in its usage line on its own.
  run->formatter(std::make_shared<RunUsage>());
  run->add_option("key", run_options.key, "the lock key")->required();
  run->add_option("--ttl", ttl, "lease length, renewed every ttl/3 (default 30s)");
  run->add_option("-w,--wait", wait, "give up waiting after this long, e.g. 1.5s (default: wait forever; 0: as --nonblock)");
  run->add_option("--owner", owner, "owner name shown by `list` (default: host:pid:random)");
  run->add_flag("-n,--nonblock", run_options.nonblock, "exit at once if the lock is held (status 75, or -E)");
  run->add_option("-E,--conflict-exit-code", conflict_status,
                  "exit status when the lock was not acquired: held with --nonblock, or --wait ran out (default 75)")
      ->check(CLI::Range(0, 255));
  run->add_option("--kill-after", kill_after, "after a lost lease, SIGKILL this long after SIGTERM (default 10s)");

  bool json = false;
  auto* list = app.add_subcommand("list", "show the held leases");
  add_backend(list);
  list->add_flag("--json", json, "print JSON for scripts");

  std::string release_key;
  bool force = false;
  auto* release = app.add_subcommand("release", "clear a lease known to be dead: lockstore release KEY --force");
  add_backend(release);
  release->add_option("key", release_key, "the lock key")->required();
  release->add_flag("--force", force, "required: the lease's holder is not asked");

  std::string admit_resource, admit_fence;
  auto* admit = app.add_subcommand(
      "admit", "the fence gate: exit 0 when FENCE is at least every fence admitted before for RESOURCE, else 75");
  add_backend(admit);
  admit->add_option("resource", admit_resource, "what the fence guards (any name, e.g. s3://bucket/key)")->required();
  admit->add_option("fence", admit_fence, "the holder's fence, e.g. \"$LOCKSTORE_FENCE\"")->required();

  std::string store_what;
  auto* store = app.add_subcommand("store", "inspect a SessionStore: sessions, stats, gc");
  add_backend(store);
  store->add_option("what", store_what, "sessions | stats | gc")->required()->check(CLI::IsMember({"sessions", "stats", "gc"}));
  store->add_flag("--json", json, "print JSON for scripts");
  bool dry_run = false;
  store->add_flag("--dry-run", dry_run, "gc: report what would be deleted, delete nothing (reads only)");

  const auto original_arguments = own_arguments;
  try {
    std::reverse(own_arguments.begin(), own_arguments.end());  // CLI11 consumes a reversed vector
    app.parse(own_arguments);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::Success& done) {
    return app.exit(done);
  } catch (const CLI::ParseError& error) {
    // Name the two mistakes CLI11 can only describe generically.
    const std::vector<std::string> commands = {"run", "list", "release", "admit", "store"};
    const auto first = std::find_if(original_arguments.begin(), original_arguments.end(),
                                    [](const std::string& a) { return !a.starts_with("-"); });
    if (first != original_arguments.end() && std::find(commands.begin(), commands.end(), *first) == commands.end()) {
      fmt::print(stderr, "lockstore: unknown command '{}' (commands: run, list, release, admit, store)\n", *first);
    } else if (first != original_arguments.end() && *first == "run" && !saw_separator) {
      fmt::print(stderr, "lockstore: missing '--' before COMMAND: lockstore run [options] KEY -- COMMAND [ARGS...]\n");
    } else {
      fmt::print(stderr, "lockstore: {}\n", error.what());
    }
    return exit_usage;
  }

  try {
    if (backend.empty())
      throw UsageError("no backend: give --backend or set LOCKSTORE_BACKEND (neither XDG_STATE_HOME nor HOME is set)");
    parse_backend_url(backend);  // a bad URL is a usage error before anything else
    const auto operator_name = fmt::format("lockstore-cli:{}", ::getpid());
    if (run->parsed()) {
      if (!saw_separator) throw UsageError("missing '--' before COMMAND: lockstore run KEY -- COMMAND [ARGS...]");
      if (command.empty()) throw UsageError("no COMMAND after '--'");
      run_options.command = command;
      run_options.ttl = parse_duration(ttl);
      if (run_options.nonblock && !wait.empty()) throw UsageError("--nonblock and --wait exclude each other");
      if (!wait.empty()) run_options.wait = parse_duration(wait, true);
      if (run_options.wait && *run_options.wait == std::chrono::milliseconds::zero()) {
        run_options.nonblock = true;  // --wait 0: one attempt, as flock(1) does
        run_options.wait.reset();
      }
      if (conflict_status) run_options.not_acquired_status = *conflict_status;
      run_options.kill_after = parse_duration(kill_after);
      if (!owner.empty()) run_options.owner = owner;
      return run_async([&] {
        return with_lock(backend, run_options.owner.value_or(random_owner()),
                         [&](auto& lock) { return supervise(lock, run_options); });
      });
    }
    if (saw_separator) throw UsageError("'--' is only for `lockstore run`");
    if (dry_run && store_what != "gc") throw UsageError("--dry-run is only for `lockstore store gc`");
    if (list->parsed())
      return run_async([&] {
        return with_lock(backend, operator_name, [&](auto& lock) { return list_leases(lock, json); }, Open::read_only);
      });
    if (release->parsed()) {
      if (!force) throw UsageError(fmt::format("refusing to clear the lease on '{}' without --force", release_key));
      return run_async([&] {
        return with_lock(backend, operator_name, [&](auto& lock) { return force_release(lock, release_key); },
                         Open::existing);
      });
    }
    if (admit->parsed()) {
      std::uint64_t fence = 0;
      const auto [end, error] = std::from_chars(admit_fence.data(), admit_fence.data() + admit_fence.size(), fence);
      if (error != std::errc() || end != admit_fence.data() + admit_fence.size() || admit_fence.empty())
        throw UsageError(fmt::format("bad fence '{}': it must be a whole number (LOCKSTORE_FENCE)", admit_fence));
      return run_async([&] {
        return with_lock(backend, operator_name, [&](auto& lock) { return admit_fence_at(lock, admit_resource, fence); });
      });
    }
    const auto path = store_path(backend);
    return run_async([&] { return store_command(path, store_what, json, dry_run); });
  } catch (const UsageError& error) {
    fmt::print(stderr, "lockstore: {}\n", error.what());
    return exit_usage;
  } catch (const BackendUnavailable& error) {
    fmt::print(stderr, "lockstore: {}\n", error.what());
    return exit_unavailable;
  } catch (const Error& error) {
    fmt::print(stderr, "lockstore: {}\n", error.message());  // without the category's "[lockstore:N]"
    if (error.code() == errc::invalid_argument) return exit_usage;
    // The server cannot be reached, or refused us: unavailable (EX_UNAVAILABLE).
    const bool server = parse_backend_url(backend).kind != BackendUrl::Kind::sqlite;
    if (server && (error.code() == errc::backend_failure || error.code() == errc::connection_lost)) return exit_unavailable;
    return exit_failure;
  } catch (const std::exception& error) {
    fmt::print(stderr, "lockstore: {}\n", error.what());
    return exit_failure;
  }
}
