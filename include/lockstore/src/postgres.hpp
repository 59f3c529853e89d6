// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Compiles the PostgreSQL backend: include it in exactly one source file of a program built with
// LOCKSTORE_SEPARATE_COMPILATION, and link lockstore::postgres's libraries: libpq.
// <lockstore/src.hpp> includes every part.
#pragma once
#ifndef LOCKSTORE_SEPARATE_COMPILATION
#error "<lockstore/src/postgres.hpp> is for builds that define LOCKSTORE_SEPARATE_COMPILATION"
#endif
// The functions defined here are not inline in this mode, so lambdas in them
// have no linkage; g++ warns when such a lambda instantiates a template
// defined in a header. The definitions are compiled in this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif
#include "lockstore/impl/postgres.ipp"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
