#include "filters/waf/waf_audit.h"

#include <cstdint>

namespace sluice::filters::waf {

namespace {

// Length of the valid UTF-8 sequence at the start of `s`, or 0 when it is not one (overlong
// forms, surrogates and code points past U+10FFFF included).
size_t utf8Length(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n;
  uint32_t cp;
  if (c < 0x80) {
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() < n) {
    return 0;
  }
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
    return 0;
  }
  return n;
}

}  // namespace

void appendJsonEscaped(std::string& out, std::string_view text, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  if (text.size() > max_bytes) {
    // Cut at a character boundary, not inside a UTF-8 sequence.
    size_t n = max_bytes;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) {
      --n;
    }
    text = text.substr(0, n);
  }
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t n = utf8Length(text.substr(i));
      if (n == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(text.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

std::string wafAuditLine(const WafVerdict& v, const WafAuditContext& c) {
  std::string out;
  out.reserve(256 + v.matches.size() * 320);
  const auto field = [&](std::string_view name, std::string_view value) {
    out += "\"";
    out += name;
    out += "\":\"";
    appendJsonEscaped(out, value, 256);
    out += "\",";
  };
  out += "{\"type\":\"waf\",";
  field("filter", c.filter);
  field("request_id", c.request_id);
  field("subject", c.subject);
  field("action", c.action);
  const auto optional = [&](std::string_view name, std::string_view value) {
    if (!value.empty()) {
      field(name, value);
    }
  };
  optional("time", c.time);
  optional("client_ip", c.client_ip);
  optional("route", c.route);
  optional("direction", c.direction);
  if (c.message != 0) {
    out += "\"message\":" + std::to_string(c.message) + ",";
  }
  out += "\"intervention\":";
  out += v.intervention ? "true" : "false";
  out += ",\"status\":" + std::to_string(v.status);
  out += ",\"anomaly_score\":" + std::to_string(v.anomaly_score);
  out += ",\"rules\":[";
  for (size_t i = 0; i < v.matches.size(); ++i) {
    const WafMatch& m = v.matches[i];
    out += i == 0 ? "{" : ",{";
    out += "\"id\":" + std::to_string(m.rule_id);
    out += ",\"severity\":" + std::to_string(m.severity);
    out += ",\"msg\":\"";
    appendJsonEscaped(out, m.message, kMaxMatchData);
    out += "\",\"data\":\"";
    appendJsonEscaped(out, m.data, kMaxMatchData);
    out += "\"}";
  }
  out += "]}";
  return out;
}

}  // namespace sluice::filters::waf
