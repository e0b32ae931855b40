#include "filters/request_key.h"

namespace sluice::filters {

std::string_view cookieValue(const HeaderFields& head, std::string_view name) {
  for (const Header& h : head.headers) {
    if (!iequals(h.name, "cookie")) {
      continue;
    }
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = v.find(';');
      std::string_view pair = v.substr(0, semi);
      while (!pair.empty() && pair.front() == ' ') {
        pair.remove_prefix(1);
      }
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
        return pair.substr(eq + 1);
      }
      if (semi == std::string_view::npos) {
        break;
      }
      v.remove_prefix(semi + 1);
    }
  }
  return {};
}

std::string_view queryValue(std::string_view target, std::string_view name) {
  size_t q = target.find('?');
  while (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    if (rest.size() > name.size() && rest.starts_with(name) && rest[name.size()] == '=') {
      rest.remove_prefix(name.size() + 1);
      return rest.substr(0, rest.find_first_of("&#"));
    }
    q = target.find('&', q + 1);
  }
  return {};
}

std::string_view requestKey(const conf::KeySource& source, const RequestHead& head,
                            std::string_view client_ip) {
  switch (source.kind) {
    case conf::KeySource::Kind::kSourceIp:
      return client_ip;
    case conf::KeySource::Kind::kHeader:
      return head.get(source.name).value_or(std::string_view());
    case conf::KeySource::Kind::kCookie:
      return cookieValue(head, source.name);
    case conf::KeySource::Kind::kQuery:
      return queryValue(head.url, source.name);
  }
  return {};
}

}  // namespace sluice::filters
