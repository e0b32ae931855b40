#pragma once

// Evaluating HTTP requests and WebSocket messages against a WafRules, one ModSecurity
// transaction each. Every function here is blocking (a CRS transaction takes milliseconds) and
// thread-safe for a shared WafRules: call them on a WafPool thread, never on an event loop.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "filters/waf/waf_rules.h"

namespace sluice::filters::waf {

struct Header {
  std::string_view name;
  std::string_view value;
};

// A request as the engine sees it. Views only: they must stay valid during the call.
struct HttpRequest {
  std::string_view id;  // request id: the transaction's UNIQUE_ID
  std::string_view client_ip;
  uint16_t client_port = 0;
  std::string_view server_ip;
  uint16_t server_port = 0;
  std::string_view method = "GET";
  std::string_view uri = "/";  // request-target, query included
  std::string_view http_version = "1.1";
  std::span<const Header> headers;
  std::string_view body;  // the whole (buffered) body; empty when there is none
  // False: the body is not inspected (not read, or not wanted). Phase 2 still runs, on the query's
  // arguments and the headers, with no body processor: a request that has a body is judged as if
  // it had none, instead of failing a JSON or multipart parse of nothing.
  bool inspect_body = true;
};

// Matched data is cut to this many bytes: enough to see the attack, never the whole payload.
inline constexpr size_t kMaxMatchData = 200;

struct WafMatch {
  int rule_id = 0;
  int severity = 0;     // syslog scale as the CRS uses it: 2 critical, 3 error, 4 warning, 5 notice
  std::string message;  // the rule's msg
  std::string data;     // the rule's logdata ("Matched Data: ... found within ARGS:q: ..."), cut
};

struct WafVerdict {
  bool intervention = false;      // block mode only: the request or message must be refused
  int status = 0;                 // the intervention's HTTP status (403, or the rule's status)
  int anomaly_score = 0;          // CRS tx.anomaly_score (inbound) after the last phase run
  std::vector<WafMatch> matches;  // every logged match, in evaluation order

  bool matched() const { return !matches.empty(); }
  std::vector<int> ruleIds() const;
};

// Phases 1 and 2 (request headers, then the body through the urlencoded, multipart, JSON or XML
// body processor that the headers select). Response phases are not run.
WafVerdict evaluateHttp(const WafRules& rules, const HttpRequest& request);

// How a WebSocket message is handed to the rules.
enum class WsPayload : uint8_t {
  kJson,    // JSON body processor: fields become ARGS (json.a.b), as for an application/json body
  kText,    // the text becomes one argument, ARGS:message, so the CRS's ARGS rules see it
  kBinary,  // raw REQUEST_BODY only (few rules look there)
};

// First non-blank byte is '{' or '['. Cheap: decides kJson vs kText without parsing twice.
bool looksLikeJson(std::string_view payload);

// What a WebSocket session keeps from its handshake: the connection and URI, the request headers,
// and the rules the handshake was judged by (messages keep using them across reloads).
class WafWsContext;

struct WafHandshake {
  WafVerdict verdict;
  std::shared_ptr<const WafWsContext> context;  // null when the verdict is an intervention
};

// Where a message transaction's phase 1 (request headers) comes from.
enum class WsPhase1 : uint8_t {
  kOnce,    // the handshake's phase-1 outcome, copied into each message transaction (the default;
            // falls back to kReplay with a libmodsecurity other than 3.0.x)
  kReplay,  // phase 1 evaluated again per message on the handshake's headers (for comparison)
};

// Judges the upgrade request like any request (evaluateHttp) and keeps its context for messages.
WafHandshake evaluateHandshake(std::shared_ptr<const WafRules> rules, const HttpRequest& upgrade,
                               WsPhase1 phase1 = WsPhase1::kOnce);

// The context of a handshake that was not evaluated (the pool was overloaded and on_overload
// let it through): its messages evaluate phase 1 again each, on the handshake's headers.
std::shared_ptr<const WafWsContext> unjudgedHandshake(std::shared_ptr<const WafRules> rules,
                                                      const HttpRequest& upgrade);

// One message as the body of a transaction carrying the handshake's context: its connection, its
// path (not its query: the handshake's arguments were judged with it) and the outcome of phase 1
// on its headers (CRS settings, exclusions, anomaly score so far). Phase 2 then reads the message
// alone, not the handshake's headers again. `id` names the transaction (for ModSecurity's logs).
WafVerdict evaluateMessage(const WafWsContext& context, std::string_view payload, WsPayload kind,
                           std::string_view id = {});

}  // namespace sluice::filters::waf
