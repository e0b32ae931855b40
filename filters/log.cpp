#include "filters/log.h"

#include <atomic>
#include <cstdio>

namespace sluice::filters {

namespace {

bool stderrEnabled(LogLevel level) {
  return level >= LogLevel::kInfo;
}

void stderrWrite(LogLevel level, std::string_view line) {
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  fprintf(stderr, "%s %.*s\n", kNames[static_cast<int>(level)], static_cast<int>(line.size()),
          line.data());
}

std::atomic<bool (*)(LogLevel)> g_enabled{&stderrEnabled};
std::atomic<void (*)(LogLevel, std::string_view)> g_write{&stderrWrite};

}  // namespace

void setLogSink(const LogSink& sink) {
  g_enabled.store(sink.enabled);
  g_write.store(sink.write);
}

bool logEnabled(LogLevel level) {
  return g_enabled.load(std::memory_order_relaxed)(level);
}

void logLine(LogLevel level, std::string_view line) {
  if (logEnabled(level)) {
    g_write.load(std::memory_order_relaxed)(level, line);
  }
}

}  // namespace sluice::filters
