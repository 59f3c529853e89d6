// The torture ledger checker (tests/torture/ledger_check.hpp) must catch what
// it claims to catch: each case writes a small ledger by hand and checks the
// verdict. Times are in nanoseconds; the TTL is 300 ms.
#include "support/helpers.hpp"
#include "torture/ledger_check.hpp"

#include <catch2/catch.hpp>

#include <fstream>

namespace lockstore::test {
namespace {

constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t ttl = 300 * ms;
constexpr std::int64_t bound = 3300 * ms;

torture::LedgerReport check(const std::string& text) {
  TempDir dir;
  const auto path = (dir / "ledger.txt").string();
  std::ofstream(path) << text;
  return torture::check_lock_ledger(path, ttl, bound);
}

bool mentions(const torture::LedgerReport& report, const std::string& words) {
  for (const auto& violation : report.violations)
    if (violation.find(words) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("torture checker: alternating holds with growing fences pass", "[torture]") {
  const auto report = check(
      "enter 10 1 0 1000\nexit 10 1 2000\n"
      "enter 11 2 500 3000\nexit 11 2 4000\n");
  CHECK(report.ok());
  CHECK(report.holds == 2);
  CHECK(report.last_fence == 2);
}

TEST_CASE("torture checker: an overlap within the earlier lease is a violation", "[torture]") {
  const auto report = check(
      "enter 10 1 0 1000\n"
      "enter 11 2 500 3000\n"   // 11 holds while 10 is still inside
      "exit 10 1 5000\nexit 11 2 6000\n");
  CHECK_FALSE(report.ok());
  CHECK(mentions(report, "within its lease"));
}

TEST_CASE("torture checker: an overlap after the earlier holder outlived its lease is counted, not failed", "[torture]") {
  const auto report = check(
      "enter 10 1 0 1000\n"
      "enter 11 2 100 400000000\n"  // 400 ms after 10 called acquire: its 300 ms lease may be gone
      "exit 10 1 500000000\nexit 11 2 600000000\n");
  CHECK(report.ok());
  CHECK(report.outlived_leases == 1);
}

TEST_CASE("torture checker: a fence that does not grow is a violation", "[torture]") {
  const auto report = check(
      "enter 10 5 0 1000\nexit 10 5 2000\n"
      "enter 11 5 2500 3000\nexit 11 5 4000\n");
  CHECK_FALSE(report.ok());
  CHECK(mentions(report, "does not exceed"));
}

TEST_CASE("torture checker: a killed holder ends its hold, and a slow recovery is a violation", "[torture]") {
  const auto quick = check(
      "enter 10 1 0 1000\nkill 10 2000 3000\n"
      "enter 11 2 100 400000000\nexit 11 2 400001000\n");
  CHECK(quick.ok());
  CHECK(quick.holder_kills == 1);
  REQUIRE(quick.recovery_ms.size() == 1);
  CHECK(quick.recovery_ms[0] == Approx(400.0).margin(0.1));

  const auto slow = check(
      "enter 10 1 0 1000\nkill 10 2000 3000\n"
      "enter 11 2 100 5000000000\nexit 11 2 5000001000\n");  // 5 s later
  CHECK_FALSE(slow.ok());
  CHECK(mentions(slow, "the next hold began only"));
}

TEST_CASE("torture checker: a holder that enters after its kill was sent, before it was reaped, was killed holding",
          "[torture]") {
  // Seen under load: the kill's t_sent was taken, then the holder took its
  // t_held and wrote its enter line before the signal landed.
  const auto raced = check(
      "enter 10 1 0 2500\nkill 10 2000 3000\n"
      "enter 11 2 100 400000000\nexit 11 2 400001000\n");
  CHECK(raced.ok());
  CHECK(raced.holder_kills == 1);
  const auto after_reaped = check("enter 10 1 0 3500\nkill 10 2000 3000\n");
  CHECK(mentions(after_reaped, "neither exited nor was killed"));
  // The killed hold lasts until the reaping: a hold that began before it overlaps.
  const auto overlap = check(
      "enter 10 1 0 1000\nkill 10 2000 300000000\n"
      "enter 11 2 100 250000000\nexit 11 2 250001000\n");
  CHECK_FALSE(overlap.ok());
}

TEST_CASE("torture checker: a hold that neither exits nor is killed, and a stray exit, are violations", "[torture]") {
  const auto open = check("enter 10 1 0 1000\n");
  CHECK(mentions(open, "neither exited nor was killed"));
  const auto stray = check("exit 10 1 2000\n");
  CHECK(mentions(stray, "exit without its enter"));
  const auto garbage = check("enter 10 x\n");
  CHECK(mentions(garbage, "malformed"));
}

}  // namespace lockstore::test
