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
