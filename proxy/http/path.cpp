#include "proxy/http/path.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "proxy/http/syntax.h"

namespace sluice::http {

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool isUnreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool isSubDelim(char c) {
  return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Applies `action` to a separator written as `raw` ("\", "%2F", "%5C"). Returns false to
// refuse the path.
bool separator(SlashAction action, std::string_view raw, std::string* out) {
  switch (action) {
    case SlashAction::kReject:
      return false;
    case SlashAction::kKeep:
      out->append(raw);
      return true;
    case SlashAction::kDecode:
      out->push_back('/');
      return true;
  }
  return false;
}

// uri-host [ ":" port ] (RFC 3986 3.2.2, 3.2.3), lower-cased into `out`. An empty port and its
// colon are dropped (RFC 3986 6.2.3). Percent-encoding and IPvFuture are refused: no client
// needs them in a host, and they would make routing on the host ambiguous.
bool parseHostPort(std::string_view text, bool need_port, std::string* out, const char** reason) {
  *reason = "invalid host";
  out->clear();
  size_t i = 0;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close > INET6_ADDRSTRLEN) {
      return false;
    }
    char literal[INET6_ADDRSTRLEN + 1];
    text.copy(literal, close - 1, 1);
    literal[close - 1] = '\0';
    in6_addr addr;
    if (inet_pton(AF_INET6, literal, &addr) != 1) {
      return false;
    }
    i = close + 1;
  } else {
    while (i < text.size() && text[i] != ':') {
      auto c = static_cast<unsigned char>(text[i]);
      if (!isUnreserved(c) && !isSubDelim(text[i])) {
        return false;
      }
      ++i;
    }
    if (i == 0) {
      return false;
    }
  }
  size_t host_end = i;
  if (i < text.size()) {
    if (text[i] != ':') {
      return false;
    }
    std::string_view port = text.substr(i + 1);
    if (port.size() > 5 || (port.empty() && need_port)) {
      return false;
    }
    unsigned value = 0;
    for (char c : port) {
      if (c < '0' || c > '9') {
        return false;
      }
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) {
      return false;
    }
    if (!port.empty()) {
      host_end = text.size();
    }
  } else if (need_port) {
    *reason = "authority-form target without a port";
    return false;
  }
  out->reserve(host_end);
  for (size_t k = 0; k < host_end; ++k) {
    out->push_back(lower(text[k]));
  }
  return true;
}

}  // namespace

uint16_t normalizePath(std::string_view path, const PathPolicy& policy, std::string* out,
                       const char** reason) {
  *reason = "";
  if (path.empty() || path[0] != '/') {
    *reason = "path does not start with /";
    return 400;
  }
  // Pass 1: decode what RFC 3986 says is equivalent (unreserved characters), write the other
  // escapes in upper case, and apply the policies to hidden separators. After it, "/" is the
  // only separator left.
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    auto uc = static_cast<unsigned char>(c);
    if (c == '%') {
      int hi = i + 2 < path.size() ? hexValue(path[i + 1]) : -1;
      int lo = hi >= 0 ? hexValue(path[i + 2]) : -1;
      if (lo < 0) {
        *reason = "invalid percent-encoding in path";
        return 400;
      }
      auto byte = static_cast<unsigned char>(hi * 16 + lo);
      i += 2;
      if (isUnreserved(byte)) {
        decoded.push_back(static_cast<char>(byte));
      } else if (byte == '/') {
        if (!separator(policy.encoded_slash, "%2F", &decoded)) {
          *reason = "encoded slash in path";
          return 400;
        }
      } else if (byte == '\\') {
        if (!separator(policy.backslash, "%5C", &decoded)) {
          *reason = "encoded backslash in path";
          return 400;
        }
      } else {
        static constexpr char kHex[] = "0123456789ABCDEF";
        decoded.push_back('%');
        decoded.push_back(kHex[byte >> 4]);
        decoded.push_back(kHex[byte & 15]);
      }
    } else if (c == '\\') {
      if (!separator(policy.backslash, "\\", &decoded)) {
        *reason = "backslash in path";
        return 400;
      }
    } else if (!isVchar(uc) || c == '?' || c == '#') {
      *reason = "invalid character in path";
      return 400;
    } else {
      decoded.push_back(c);
    }
  }

  // Pass 2: remove dot segments (RFC 3986 5.2.4) segment by segment, and merge slashes when
  // asked. A path ending in a dot segment keeps its trailing "/" ("/a/b/.." is "/a/").
  out->clear();
  out->reserve(decoded.size());
  size_t pos = 1;
  while (true) {
    size_t next = decoded.find('/', pos);
    bool last = next == std::string::npos;
    std::string_view seg(decoded.data() + pos, (last ? decoded.size() : next) - pos);
    if (seg == "." || seg == "..") {
      if (seg == "..") {
        size_t slash = out->rfind('/');
        out->resize(slash == std::string::npos ? 0 : slash);  // nothing to drop at the root
      }
      if (last) {
        out->push_back('/');
      }
    } else if (seg.empty() && policy.merge_slashes) {
      if (last && (out->empty() || out->back() != '/')) {
        out->push_back('/');
      }
    } else {
      out->push_back('/');
      out->append(seg);
    }
    if (last) {
      break;
    }
    pos = next + 1;
  }
  if (out->empty()) {
    out->push_back('/');
  }
  return 0;
}

TargetResult normalizeTarget(std::string_view method, std::string_view target,
                             std::string_view host, const PathPolicy& policy) {
  TargetResult r;
  NormalizedTarget& t = r.target;
  t.original.assign(target);
  auto fail = [&r](const char* reason) {
    r.status = 400;
    r.reason = reason;
    return r;
  };
  if (target.empty()) {
    return fail("empty request-target");
  }
  if (target.find('#') != std::string_view::npos) {
    return fail("fragment in request-target");
  }
  for (char c : target) {
    if (!isVchar(static_cast<unsigned char>(c))) {
      return fail("invalid character in request-target");
    }
  }
  const bool connect = method == "CONNECT";
  if (connect) {
    // authority-form = uri-host ":" port (RFC 9112 3.2.3), and nothing else for CONNECT.
    t.form = TargetForm::kAuthority;
    if (!parseHostPort(target, true, &t.host, &r.reason)) {
      return fail(r.reason);
    }
    return r;
  }
  if (target == "*") {
    if (method != "OPTIONS") {
      return fail("asterisk-form target for a method other than OPTIONS");
    }
    t.form = TargetForm::kAsterisk;
    t.path = "*";
  } else if (target[0] == '/') {
    t.form = TargetForm::kOrigin;
  } else {
    // absolute-form: "http" or "https" "://" authority path-abempty [ "?" query ]
    size_t colon = target.find("://");
    std::string scheme;
    for (size_t i = 0; colon != std::string_view::npos && i < colon; ++i) {
      scheme.push_back(lower(target[i]));
    }
    if (scheme != "http" && scheme != "https") {
      return fail("invalid request-target");
    }
    std::string_view rest = target.substr(colon + 3);
    size_t end = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, end);
    if (authority.find('@') != std::string_view::npos) {
      return fail("userinfo in request-target");  // RFC 9110 4.2.4
    }
    if (authority.empty() || !parseHostPort(authority, false, &t.host, &r.reason)) {
      return fail("invalid host in request-target");
    }
    t.form = TargetForm::kAbsolute;
    t.scheme = std::move(scheme);
    target = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  }
  if (t.form != TargetForm::kAbsolute && !host.empty() &&
      !parseHostPort(host, false, &t.host, &r.reason)) {
    return fail("invalid Host header");  // RFC 9112 3.2
  }
  if (t.form == TargetForm::kAsterisk) {
    return r;
  }
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) {
    t.query.assign(target.substr(q));
  }
  if (path.empty()) {
    path = "/";  // "http://a" and "http://a?x" (RFC 9112 3.2.1: an empty path is "/")
  }
  const char* reason = "";
  if (normalizePath(path, policy, &t.path, &reason) != 0) {
    return fail(reason);
  }
  return r;
}

}  // namespace sluice::http
