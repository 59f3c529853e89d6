// The SQLite backend: SqliteDatabase (a shared handle to one file) and
// SqliteLock (leases in it). Needs SQLite3 (target lockstore::sqlite).
#pragma once

#include "lockstore/lockstore.hpp"
#include "lockstore/sqlite_database.hpp"
#include "lockstore/sqlite_lock.hpp"
