// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Errors of lockstore: an error-code enum in its own category, and the one
// exception type every operation throws. "Not acquired" is never an error:
// it is a value (std::nullopt or false); only real failures are thrown.
#pragma once

#include "lockstore/version.hpp"

#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <string>
#include <type_traits>

namespace lockstore {

enum class errc {
  invalid_argument = 1,    ///< bad input from the caller (key, TTL, owner, ...)
  timeout,                 ///< acquire's deadline elapsed
  lock_lost,               ///< a lease was lost while its holder still worked
  not_owner,               ///< the caller's token does not hold the lease
  head_revision_conflict,  ///< a commit's expected head revision is stale
  claim_superseded,        ///< a work claim no longer owns its items
  unsupported_schema,      ///< the file's schema version is not this build's
  corrupt_data,            ///< stored bytes cannot be decoded, or not a database
  backend_failure,         ///< the backend refused or failed an operation
  connection_lost,         ///< the connection to a server dropped mid-operation
};

namespace detail {

class ErrorCategory final : public boost::system::error_category {
 public:
  // A fixed id makes the category compare equal across shared libraries.
  constexpr ErrorCategory() noexcept : boost::system::error_category(0x6c6f636b73746f72ULL) {}

  const char* name() const noexcept override { return "lockstore"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_argument: return "invalid argument";
      case errc::timeout: return "timed out";
      case errc::lock_lost: return "lock lost";
      case errc::not_owner: return "not the owner of the lease";
      case errc::head_revision_conflict: return "head revision conflict";
      case errc::claim_superseded: return "claim superseded";
      case errc::unsupported_schema: return "unsupported schema version";
      case errc::corrupt_data: return "corrupt data";
      case errc::backend_failure: return "backend failure";
      case errc::connection_lost: return "connection lost";
    }
    return "unknown lockstore error";
  }
};

}  // namespace detail

/// The category named "lockstore" behind every lockstore::errc.
inline const boost::system::error_category& error_category() noexcept {
  static constexpr detail::ErrorCategory category;
  return category;
}

inline boost::system::error_code make_error_code(errc code) noexcept {
  return {static_cast<int>(code), error_category()};
}

/// The exception lockstore throws. `code()` compares equal to an errc;
/// `what()` carries a message a user can act on, followed by the code's text.
class Error : public boost::system::system_error {
 public:
  Error(errc code, std::string message)
      : boost::system::system_error(make_error_code(code), message), message_(std::move(message)) {}

  /// The message without the category text that `what()` appends.
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};

}  // namespace lockstore

template <>
struct boost::system::is_error_code_enum<lockstore::errc> : std::true_type {};
