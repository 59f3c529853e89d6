// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The SQLite backend: SqliteDatabase (a shared handle to one file) and
// SqliteLock (leases in it). Needs SQLite3 (target lockstore::sqlite).
#pragma once

#include "lockstore/lockstore.hpp"
#include "lockstore/sqlite_database.hpp"
#include "lockstore/sqlite_lock.hpp"
