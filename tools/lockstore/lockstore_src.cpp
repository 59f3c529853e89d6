// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// lockstore compiled once for the tool: the parts for the backends it
// was built with.
#include <lockstore/src/core.hpp>
#include <lockstore/src/sqlite.hpp>
#include <lockstore/src/store.hpp>
#ifdef LOCKSTORE_TOOL_POSTGRES
#include <lockstore/src/postgres.hpp>
#endif
#ifdef LOCKSTORE_TOOL_REDIS
#include <lockstore/src/redis.hpp>
#endif
