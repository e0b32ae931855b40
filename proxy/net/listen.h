#pragma once

// Listening sockets: created and bound by the main thread (a config error names the address),
// listened on and polled by whoever accepts (net::acceptSocket()).

#include <string>

#include "conf/config.h"

namespace sluice::net {

// A non-blocking TCP socket bound to `addr` (SO_REUSEADDR; SO_REUSEPORT when `reuse_port`, so
// that each worker has its own), not listening yet; or -1 with `error` set.
int listenSocket(const conf::Address& addr, bool reuse_port, std::string* error);

}  // namespace sluice::net
