#pragma once

// Reading a per-request key (conf::KeySource) from a request: the client's address, a header, a
// cookie or a query parameter. Shared by the balancer's hash_key and filters that key by request.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "filters/http_head.h"

namespace sluice::filters {

// The value of cookie `name` in the request's Cookie lines; empty when absent.
std::string_view cookieValue(const HeaderFields& head, std::string_view name);
// The value of query parameter `name` in a request-target (as sent, not decoded); empty when
// absent.
std::string_view queryValue(std::string_view target, std::string_view name);
// Every value of query parameter `name` in a request-target (as sent), in order; and every value
// of cookie `name` in the request's Cookie lines. Credentials are read with these: a request
// that carries two must be refused, since the backend might read another one than sluice did.
std::vector<std::string_view> queryValues(std::string_view target, std::string_view name);
std::vector<std::string_view> cookieValues(const HeaderFields& head, std::string_view name);
// The request-target with every `name=...` parameter removed (`replacement` nullopt), or with
// its value replaced by `replacement`.
std::string rewriteQueryParam(std::string_view target, std::string_view name,
                              std::optional<std::string_view> replacement);

// The key `source` selects; empty when the request does not carry it.
std::string_view requestKey(const conf::KeySource& source, const RequestHead& head,
                            std::string_view client_ip);

}  // namespace sluice::filters
