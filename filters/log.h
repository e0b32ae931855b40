#pragma once

// Log lines from filters, into sluice's error log. Filters include nothing of proxy/, so the
// proxy installs the sink when it starts; until then (unit tests, tools) lines go to stderr.
// Lines are written whole, from any thread. A filter logs a degraded path once per occurrence
// or per change of state, never per request: rate-limit your own lines.

#include <cstdint>
#include <string_view>

namespace sluice::filters {

enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };

struct LogSink {
  bool (*enabled)(LogLevel level);
  void (*write)(LogLevel level, std::string_view line);
};

void setLogSink(const LogSink& sink);
bool logEnabled(LogLevel level);
void logLine(LogLevel level, std::string_view line);

}  // namespace sluice::filters
