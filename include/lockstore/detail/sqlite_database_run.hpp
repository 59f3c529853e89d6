// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// What lockstore's SQLite components (the lock, the store, the tool and the
// tests) need of a SqliteDatabase beyond its public declarations: its shared
// state and the templates that run jobs on its connection thread.
#pragma once

#include "lockstore/sqlite_database.hpp"

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_shared.hpp"

#include <utility>

namespace lockstore {


template <class F>
asio::awaitable<std::invoke_result_t<F&, detail::SqliteConnection&>> SqliteDatabase::run(F f) const {
  return shared_->worker.run(std::move(f));
}

template <class F>
auto SqliteDatabase::start(F f) const {
  return shared_->worker.start(std::move(f));
}

template <class Started>
auto SqliteDatabase::outcome(Started started) const {
  return shared_->worker.outcome(std::move(started));
}

template <class F>
void SqliteDatabase::post(F f) const {
  shared_->worker.post(std::move(f));
}

}  // namespace lockstore
