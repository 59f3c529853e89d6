// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// lockstore: distributed locks (leases) for Boost.Asio C++20 coroutines.
// This header gives the core and the in-memory backend; the SQLite,
// PostgreSQL and Redis backends and the SessionStore have their own headers.
#pragma once

#include "lockstore/distributed_lock.hpp"
#include "lockstore/error.hpp"
#include "lockstore/key.hpp"
#include "lockstore/lock_guard.hpp"
#include "lockstore/log.hpp"
#include "lockstore/memory.hpp"
#include "lockstore/owner.hpp"
#include "lockstore/session_lock.hpp"
