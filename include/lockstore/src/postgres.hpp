// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Compiles the PostgreSQL backend: include it in exactly one source file of a
// program built with LOCKSTORE_SEPARATE_COMPILATION, and link
// lockstore::postgres's libraries: libpq. <lockstore/src.hpp> includes every
// part.
#pragma once
#include "lockstore/detail/src_begin.hpp"
#include "lockstore/impl/postgres.ipp"
#include "lockstore/detail/src_end.hpp"
