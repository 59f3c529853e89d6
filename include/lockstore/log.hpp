// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The library's one log sink. lockstore logs rarely: a guard dropped without
// release, a renewal that failed, a release that failed after the body ran.
// The handler is process-wide and may be replaced from any thread.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>

namespace lockstore {

enum class LogLevel { debug, info, warning, error };

using LogHandler = std::function<void(LogLevel, std::string_view)>;

inline std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

namespace detail {

struct LogSink {
  std::mutex mutex;
  std::shared_ptr<const LogHandler> handler;  // nullptr: the default stderr sink

  static LogSink& instance() noexcept {
    static LogSink sink;
    return sink;
  }
};

/// Sends one message to the current handler. Never throws: a handler that
/// throws is ignored, because logging happens in destructors too.
inline void log(LogLevel level, std::string_view message) noexcept {
  try {
    std::shared_ptr<const LogHandler> handler;
    {
      auto& sink = LogSink::instance();
      std::lock_guard lock(sink.mutex);
      handler = sink.handler;
    }
    if (handler) {
      (*handler)(level, message);
    } else {
      fmt::print(stderr, "lockstore {}: {}\n", to_string(level), message);
    }
  } catch (...) {
  }
}

}  // namespace detail

/// Replaces the log sink; `nullptr` restores the default (one line per
/// message on stderr). Thread-safe; a message being logged concurrently goes
/// to either the old or the new handler.
inline void set_log_handler(LogHandler handler) {
  auto shared = handler ? std::make_shared<const LogHandler>(std::move(handler)) : nullptr;
  auto& sink = detail::LogSink::instance();
  std::lock_guard lock(sink.mutex);
  sink.handler = std::move(shared);
}

}  // namespace lockstore
