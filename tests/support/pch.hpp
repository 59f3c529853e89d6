// Headers every test, example and benchmark includes, precompiled once.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <lockstore/lockstore.hpp>
#include <lockstore/postgres.hpp>
#include <lockstore/redis.hpp>
#include <lockstore/sqlite.hpp>
#include <lockstore/store.hpp>
#include <lockstore/typed_store.hpp>
// Internal pieces the tests and benchmarks use beyond the public API (in
// the separately compiled build, the public headers declare only).
#include <lockstore/detail/pg_connection.hpp>
#include <lockstore/detail/postgres_sql.hpp>
#include <lockstore/detail/redis_connection.hpp>
#include <lockstore/detail/redis_scripts.hpp>
#include <lockstore/detail/sqlite_database_run.hpp>
#include <lockstore/detail/sqlite_lock_sql.hpp>
#include <lockstore/detail/sqlite_schema.hpp>
#include <lockstore/detail/sqlite_wake.hpp>
#include <lockstore/detail/store_ops.hpp>
