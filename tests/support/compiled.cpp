// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// lockstore compiled once for its own tests, tool, examples and benchmarks
// (LOCKSTORE_SEPARATE_COMPILATION): the mode a user gets from one source
// file like this one.
#include <lockstore/src.hpp>
