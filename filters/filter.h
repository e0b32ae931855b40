#pragma once

// The filter interface. Filters see the HTTP request head and, on WebSocket routes, messages in
// each direction. They depend on conf/ and on this header only: nothing of proxy/ or libuv.
// (The message phase and the concrete filters arrive with the WebSocket gateway.)

#include "conf/config.h"

namespace sluice::filters {

// Checks a [[filters]] entry's type and type-specific keys, appending `file:line:col` errors.
// This is the conf::FilterValidator the proxy hands to conf::loadFile.
void validateFilterConfig(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

}  // namespace sluice::filters
