// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Opens a <lockstore/src/*.hpp> part; detail/src_end.hpp closes it. Not
// include-guarded: each part includes both.
#ifndef LOCKSTORE_SEPARATE_COMPILATION
#error "<lockstore/src.hpp> and <lockstore/src/*.hpp> are for builds that define LOCKSTORE_SEPARATE_COMPILATION"
#endif
// The functions defined in a part are not inline in this mode, so lambdas in
// them have no linkage; g++ warns when such a lambda instantiates a template
// defined in a header. The definitions are compiled in that one file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif
