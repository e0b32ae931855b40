#pragma once

// Listening sockets: created and bound by the main thread (a config error names the address),
// listened on and polled by whoever accepts (net::acceptSocket()).

#include <string>

#include "conf/config.h"

namespace sluice::net {

// A non-blocking TCP socket bound to `addr` (SO_REUSEADDR; SO_REUSEPORT when `reuse_port`, so
// that each worker has its own), not listening yet; or -1 with `error` set.
int listenSocket(const conf::Address& addr, bool reuse_port, std::string* error);

// Whether `addr` is free for sluice: a bind without SO_REUSEPORT, closed at once. Another process
// listening there (with SO_REUSEPORT or not) makes it fail, where a SO_REUSEPORT bind would
// silently share the port with it. 0, or -1 with `error` set.
int probeAddress(const conf::Address& addr, std::string* error);

// What to do about a failed bind, as a parenthesised sentence ("" when there is nothing to say).
std::string bindHint(const conf::Address& addr, int err);

}  // namespace sluice::net
