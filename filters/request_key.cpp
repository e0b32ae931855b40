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

namespace {

std::string_view trimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool isParam(std::string_view pair, std::string_view name) {
  return pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=';
}

}  // namespace

std::vector<std::string_view> queryValues(std::string_view target, std::string_view name) {
  std::vector<std::string_view> out;
  size_t q = target.find('?');
  if (q == std::string_view::npos) {
    return out;
  }
  std::string_view query = target.substr(q + 1);
  query = query.substr(0, query.find('#'));
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (isParam(pair, name)) {
      out.push_back(pair.substr(name.size() + 1));
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return out;
}

std::vector<std::string_view> cookieValues(const HeaderFields& head, std::string_view name) {
  std::vector<std::string_view> out;
  for (const Header& h : head.headers) {
    if (!iequals(h.name, "cookie")) {
      continue;
    }
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = v.find(';');
      std::string_view pair = trimSpaces(v.substr(0, semi));
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && trimSpaces(pair.substr(0, eq)) == name) {
        out.push_back(trimSpaces(pair.substr(eq + 1)));
      }
      if (semi == std::string_view::npos) {
        break;
      }
      v.remove_prefix(semi + 1);
    }
  }
  return out;
}

std::string rewriteQueryParam(std::string_view target, std::string_view name,
                              std::optional<std::string_view> replacement) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) {
    return std::string(target);
  }
  std::string out(target.substr(0, q));
  std::string_view query = target.substr(q + 1);
  bool first = true;
  while (true) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    bool match = isParam(pair, name);
    if (!match || replacement) {
      out.push_back(first ? '?' : '&');
      first = false;
      if (match) {
        out.append(name);
        out.push_back('=');
        out.append(*replacement);
      } else {
        out.append(pair);
      }
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return out;
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
