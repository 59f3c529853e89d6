// 04: an agent loop on the SessionStore. Two worker processes compete for a
// session's queued user messages: each claims one, runs a "turn" on the
// typed conversation state, and commits the new checkpoint and the claim's
// completion in one commit. A worker that loses the revision race gives its
// claim back and tries again, so every message is answered exactly once.
#include <lockstore/store.hpp>
#include <lockstore/typed_store.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

using namespace std::chrono_literals;
namespace asio = boost::asio;

struct Conversation {
  int turns = 0;
  std::string transcript;
};

// A user-defined codec: "<turns>\n<transcript>".
struct ConversationCodec {
  static std::string encode(const Conversation& c) { return fmt::format("{}\n{}", c.turns, c.transcript); }
  static Conversation decode(std::string_view bytes) {
    const auto newline = bytes.find('\n');
    if (newline == std::string_view::npos) throw lockstore::Error(lockstore::errc::corrupt_data, "no turn count");
    return Conversation{std::stoi(std::string(bytes.substr(0, newline))), std::string(bytes.substr(newline + 1))};
  }
};
using Store = lockstore::TypedSessionStore<Conversation, ConversationCodec>;

asio::awaitable<void> worker(std::filesystem::path path, std::string name) {
  auto database = co_await lockstore::SqliteDatabase::open(path);
  Store store(co_await lockstore::SessionStore::open(database));
  for (;;) {
    auto claim = co_await store.untyped().claim("chat-1", name, 5s, 1);
    if (!claim) {
      auto pending = co_await store.untyped().pending("chat-1");
      if (pending.empty()) co_return;  // all answered
      asio::steady_timer later(co_await asio::this_coro::executor, 2ms);
      co_await later.async_wait(asio::use_awaitable);
      continue;
    }
    auto current = co_await store.load("chat-1");
    Conversation state = current ? current->state : Conversation{};
    state.turns += 1;
    state.transcript += fmt::format("{} answered '{}'\n", name, claim->items[0].payload);

    lockstore::CommitRequest request;
    request.session_id = "chat-1";
    request.expected_head_revision = current ? current->head.head_revision : 0;
    request.complete_claim = *claim;
    bool lost_race = false;
    try {
      co_await store.commit(request, state);  // checkpoint + completion, atomically
    } catch (const lockstore::Error& error) {
      if (error.code() != lockstore::errc::head_revision_conflict) throw;
      lost_race = true;  // the other worker moved the head
    }
    if (lost_race) co_await store.untyped().abandon(*claim);  // give the message back and retry
  }
}

int run(asio::awaitable<void> work) {
  asio::io_context context;
  auto done = asio::co_spawn(context, std::move(work), asio::use_future);
  context.run();
  done.get();
  return 0;
}

int main() {
  // A directory of its own: the database, its WAL files and the wake file
  // (`-lockstore-wake`) all go when it does.
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("lockstore-agent-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto path = dir / "locks.db";
  constexpr int messages = 10;
  run([&]() -> asio::awaitable<void> {  // seed, then close before forking
    auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path));
    for (int i = 0; i < messages; ++i) {
      lockstore::WorkDraft message;
      message.payload = fmt::format("message {}", i);
      co_await store.enqueue("chat-1", message);
    }
  }());
  for (const char* name : {"worker-a", "worker-b"})
    if (::fork() == 0) ::_exit(run(worker(path, name)));
  int failures = 0;
  for (int i = 0; i < 2; ++i) {
    int status = 0;
    ::wait(&status);
    failures += (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : 1;
  }

  int turns = 0;
  run([&]() -> asio::awaitable<void> {
    Store store(co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open_readonly(path)));
    auto final_state = co_await store.load("chat-1");
    turns = final_state ? final_state->state.turns : 0;
    fmt::print("{}revision {}, {} turns\n", final_state ? final_state->state.transcript : "",
               final_state ? final_state->head.head_revision : 0, turns);
  }());
  std::filesystem::remove_all(dir);
  return failures == 0 && turns == messages ? 0 : 1;
}
