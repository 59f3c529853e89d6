// The lockstore tool's exit statuses, documented in README "Command-line tool".
#pragma once

namespace lockstore::cli {

enum ExitCode : int {
  exit_ok = 0,
  exit_failure = 1,          ///< the backend failed (message says why)
  exit_usage = 64,           ///< bad arguments: URL, duration, missing --, unknown command
  exit_unavailable = 69,     ///< the backend is not built in or cannot be opened
  exit_wait_timeout = 73,    ///< run: --wait elapsed before the lock was free
  exit_lock_held = 75,       ///< run --nonblock: the lock is held
  exit_lease_lost = 77,      ///< run: the lease was lost while COMMAND ran
  exit_cannot_exec = 127,    ///< run: COMMAND could not be started
};

}  // namespace lockstore::cli
