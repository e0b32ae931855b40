#pragma once

// The audit log line of a WAF verdict: one JSON object per evaluation that matched anything,
// naming the rules, their messages, the matched data (cut to kMaxMatchData bytes) and the anomaly
// score. Never the payload itself: only what the rules chose to log about it.

#include <cstdint>
#include <string>
#include <string_view>

#include "filters/waf/waf_eval.h"

namespace sluice::filters::waf {

struct WafAuditContext {
  std::string_view filter;      // the filter's name
  std::string_view request_id;  // the request's, or the WebSocket session's, id
  std::string_view subject;     // "request", "handshake", "message"
  std::string_view action;      // what sluice did: "deny", "close", "drop", "log" (detect), ...
  // Optional (left out of the line when empty or 0).
  std::string_view time;       // when (filters::AuditLog::now())
  std::string_view client_ip;  // the client's address
  std::string_view route;      // the route's name
  std::string_view direction;  // a message's: "client" or "backend"
  uint64_t message = 0;        // a message's number in its session (1: the first), per direction
};

// One line of JSON, no trailing newline. Strings are escaped, and bytes that are not UTF-8
// become U+FFFD, so the line is valid JSON whatever the payload was.
std::string wafAuditLine(const WafVerdict& verdict, const WafAuditContext& context);

// `text` as the inside of a JSON string (no quotes), cut to at most `max_bytes` of input.
void appendJsonEscaped(std::string& out, std::string_view text, size_t max_bytes = SIZE_MAX);

}  // namespace sluice::filters::waf
