// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Header-only (the default) or separately compiled. With
// LOCKSTORE_SEPARATE_COMPILATION defined in every translation unit, the
// backend headers declare their classes only, and the definitions are
// compiled once, in the one source file that includes <lockstore/src.hpp>
// (or one of <lockstore/src/*.hpp>). The C client headers (sqlite3.h,
// libpq-fe.h, hiredis.h) and the platform headers then reach that file only.
#pragma once

#ifdef LOCKSTORE_SEPARATE_COMPILATION
#define LOCKSTORE_DECL
#else
#define LOCKSTORE_DECL inline
#endif
