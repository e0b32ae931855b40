#pragma once

// The error log: one line per event on stderr, "TIME LEVEL [worker] message". Thread-safe.

#include <cstdarg>

namespace sluice::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void setLevel(Level level);
bool enabled(Level level);
void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define SLUICE_LOG(level, ...)                    \
  do {                                            \
    if (::sluice::log::enabled(level)) {          \
      ::sluice::log::write((level), __VA_ARGS__); \
    }                                             \
  } while (0)
#define LOG_DEBUG(...) SLUICE_LOG(::sluice::log::Level::kDebug, __VA_ARGS__)
#define LOG_INFO(...) SLUICE_LOG(::sluice::log::Level::kInfo, __VA_ARGS__)
#define LOG_WARN(...) SLUICE_LOG(::sluice::log::Level::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) SLUICE_LOG(::sluice::log::Level::kError, __VA_ARGS__)

}  // namespace sluice::log
