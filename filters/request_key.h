#pragma once

// Reading a per-request key (conf::KeySource) from a request: the client's address, a header, a
// cookie or a query parameter. Shared by the balancer's hash_key and filters that key by request.

#include <string_view>

#include "conf/config.h"
#include "filters/http_head.h"

namespace sluice::filters {

// The value of cookie `name` in the request's Cookie lines; empty when absent.
std::string_view cookieValue(const HeaderFields& head, std::string_view name);
// The value of query parameter `name` in a request-target (as sent, not decoded); empty when
// absent.
std::string_view queryValue(std::string_view target, std::string_view name);
// The key `source` selects; empty when the request does not carry it.
std::string_view requestKey(const conf::KeySource& source, const RequestHead& head,
                            std::string_view client_ip);

}  // namespace sluice::filters
