// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Compiles the SQLite backend (SqliteDatabase, SqliteLock): include it in
// exactly one source file of a program built with
// LOCKSTORE_SEPARATE_COMPILATION, and link lockstore::sqlite's libraries:
// SQLite3. <lockstore/src.hpp> includes every part.
#pragma once
#include "lockstore/detail/src_begin.hpp"
#include "lockstore/impl/sqlite_database.ipp"
#include "lockstore/impl/sqlite_lock.ipp"
#include "lockstore/detail/src_end.hpp"
