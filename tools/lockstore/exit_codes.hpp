// The lockstore tool's exit statuses, documented in README "Command-line tool".
// Where a number is one of sysexits.h, it has that meaning.
#pragma once

namespace lockstore::cli {

enum ExitCode : int {
  exit_ok = 0,
  exit_failure = 1,          ///< the backend failed (message says why)
  exit_usage = 64,           ///< EX_USAGE: bad arguments: URL, duration, missing --, unknown command
  exit_unavailable = 69,     ///< EX_UNAVAILABLE: the backend is not built in or cannot be reached
  exit_not_acquired = 75,    ///< EX_TEMPFAIL: run: the lock is held (--nonblock) or --wait ran out (-E changes it); admit: refused
  exit_lease_lost = 77,      ///< EX_NOPERM: run: the lease, the permission to act, was lost while COMMAND ran
  exit_cannot_exec = 126,    ///< run: COMMAND exists but cannot be run (as in the shells)
  exit_command_not_found = 127,  ///< run: there is no such COMMAND (as in the shells)
};

}  // namespace lockstore::cli
