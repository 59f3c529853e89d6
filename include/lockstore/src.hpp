// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Compiles all of lockstore, for programs built with
// LOCKSTORE_SEPARATE_COMPILATION (see detail/config.hpp): include it in
// exactly one source file, and link SQLite3, OpenSSL libcrypto, libpq and
// hiredis. To compile only some backends, include the parts from
// <lockstore/src/*.hpp> instead: core, sqlite, store, postgres, redis.
#pragma once
#include "lockstore/src/core.hpp"
#include "lockstore/src/sqlite.hpp"
#include "lockstore/src/store.hpp"
#include "lockstore/src/postgres.hpp"
#include "lockstore/src/redis.hpp"
