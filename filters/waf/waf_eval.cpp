#include "filters/waf/waf_eval.h"

#include <modsecurity/collection/collection.h>
#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rule_message.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <modsecurity/variable_value.h>

#include <charconv>
#include <deque>
#include <list>
#include <optional>

// Enumerating a collection (below: copying the TX collection after phase 1) takes a
// variables::KeyExclusions, which libmodsecurity declares only in its private headers. This is
// the same class as in its src/variables/variable.h for every 3.0.x: a deque of owning pointers
// whose only use here is to stay empty. The library's version is checked at run time
// (phase1SnapshotUsable); any other version evaluates phase 1 per message instead.
namespace modsecurity::variables {
class KeyExclusion {
 public:
  KeyExclusion() = default;
  virtual bool match(const std::string& a) = 0;
  virtual ~KeyExclusion() = default;
};
class KeyExclusions : public std::deque<std::unique_ptr<KeyExclusion>> {};
}  // namespace modsecurity::variables

namespace sluice::filters::waf {

namespace {

// What phase 1 of the handshake left in its transaction that phase 2 of a message reads: the TX
// collection (the CRS's paranoia level, thresholds, severity weights, scores so far, ...) and
// what ctl: and allow actions changed for the rest of the transaction.
struct Phase1State {
  std::vector<std::pair<std::string, std::string>> tx;
  std::list<int> remove_by_id;
  std::list<std::pair<int, int>> remove_by_id_range;
  std::list<std::string> remove_by_tag;
  std::list<std::pair<std::string, std::string>> remove_target_by_tag;
  std::list<std::pair<int, std::string>> remove_target_by_id;
  int request_body_access = 0;
  int rule_engine = 0;
  int highest_severity = 255;
  modsecurity::actions::disruptive::AllowType allow_type{};
};

}  // namespace

class WafWsContext {
 public:
  std::shared_ptr<const WafRules> rules;
  std::string client_ip;
  uint16_t client_port = 0;
  std::string server_ip;
  uint16_t server_port = 0;
  std::string method;
  std::string path;  // the handshake's request-target without its query
  std::string http_version;
  // The handshake's headers but Cookie and those about its body (see leftOutOfMessages).
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<Phase1State> phase1;
};

std::vector<int> WafVerdict::ruleIds() const {
  std::vector<int> ids;
  ids.reserve(matches.size());
  for (const WafMatch& m : matches) {
    ids.push_back(m.rule_id);
  }
  return ids;
}

bool looksLikeJson(std::string_view payload) {
  for (char c : payload) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      continue;
    }
    return c == '{' || c == '[';
  }
  return false;
}

namespace {

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string cut(const std::string& s) {
  if (s.size() <= kMaxMatchData) {
    return s;
  }
  // Do not split a UTF-8 sequence: back up to the start of the character at the cut.
  size_t n = kMaxMatchData;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) {
    --n;
  }
  return s.substr(0, n);
}

// The transaction's disruptive action, if it has one: its HTTP status, else 0. ModSecurity hands
// an intervention out once (intervention() resets it), so each phase's is asked for exactly once
// and kept by the caller.
int interventionStatus(modsecurity::Transaction& t) {
  modsecurity::ModSecurityIntervention it;
  modsecurity::intervention::clean(&it);
  const bool disruptive = t.intervention(&it);
  modsecurity::intervention::free(&it);  // the log line it hands over
  return disruptive ? (it.status > 0 ? it.status : 403) : 0;
}

WafVerdict collect(modsecurity::Transaction& t, int status) {
  WafVerdict v;
  v.intervention = status != 0;
  v.status = status;
  v.matches.reserve(t.m_rulesMessages.size());
  for (const modsecurity::RuleMessage& m : t.m_rulesMessages) {
    v.matches.push_back({m.m_ruleId, m.m_severity, cut(m.m_message), cut(m.m_data)});
  }
  std::unique_ptr<std::string> score =
      t.m_collections.m_tx_collection->resolveFirst("anomaly_score");
  if (score) {
    std::from_chars(score->data(), score->data() + score->size(), v.anomaly_score);
  }
  return v;
}

// The library this process runs, not only the headers it was built with, must be a 3.0.x.
bool phase1SnapshotUsable(modsecurity::ModSecurity* engine) {
  static const bool usable = engine->whoAmI().starts_with("ModSecurity v3.0.");
  return usable;
}

Phase1State takePhase1(modsecurity::Transaction& t) {
  Phase1State s;
  std::vector<const modsecurity::VariableValue*> values;
  modsecurity::variables::KeyExclusions none;
  t.m_collections.m_tx_collection->resolveMultiMatches("", &values, none);
  s.tx.reserve(values.size());
  // resolveMultiMatches() prepends: walk backwards to keep the order in which they were set.
  for (auto it = values.rbegin(); it != values.rend(); ++it) {
    s.tx.emplace_back((*it)->getKey(), (*it)->getValue());
    delete *it;
  }
  s.remove_by_id = t.m_ruleRemoveById;
  s.remove_by_id_range = t.m_ruleRemoveByIdRange;
  s.remove_by_tag = t.m_ruleRemoveByTag;
  s.remove_target_by_tag = t.m_ruleRemoveTargetByTag;
  s.remove_target_by_id = t.m_ruleRemoveTargetById;
  s.request_body_access = t.m_requestBodyAccess;
  s.rule_engine = t.m_secRuleEngine;
  s.highest_severity = t.m_highestSeverityAction;
  s.allow_type = t.m_allowType;
  return s;
}

void givePhase1(const Phase1State& s, modsecurity::Transaction& t) {
  modsecurity::collection::Collection* tx = t.m_collections.m_tx_collection;
  for (const auto& [key, value] : s.tx) {
    tx->store(key, value);
  }
  t.m_ruleRemoveById = s.remove_by_id;
  t.m_ruleRemoveByIdRange = s.remove_by_id_range;
  t.m_ruleRemoveByTag = s.remove_by_tag;
  t.m_ruleRemoveTargetByTag = s.remove_target_by_tag;
  t.m_ruleRemoveTargetById = s.remove_target_by_id;
  t.m_requestBodyAccess = s.request_body_access;
  t.m_secRuleEngine = s.rule_engine;
  t.m_highestSeverityAction = s.highest_severity;
  t.m_allowType = s.allow_type;
}

// Phases 1 and 2 of one request; `after_phase1` sees the transaction between them.
template <typename AfterPhase1>
WafVerdict runHttp(const WafRules& rules, const HttpRequest& r, AfterPhase1&& after_phase1) {
  std::string id(r.id);
  modsecurity::Transaction t(rules.engine(), rules.rulesSet(), id.data(), nullptr);
  const std::string client(r.client_ip);
  const std::string server(r.server_ip);
  t.processConnection(client.c_str(), r.client_port, server.c_str(), r.server_port);
  const std::string uri(r.uri);
  const std::string method(r.method);
  const std::string version(r.http_version);
  t.processURI(uri.c_str(), method.c_str(), version.c_str());
  for (const Header& h : r.headers) {
    t.addRequestHeader(bytes(h.name), h.name.size(), bytes(h.value), h.value.size());
  }
  t.processRequestHeaders();
  if (int status = interventionStatus(t)) {
    return collect(t, status);
  }
  after_phase1(t);
  if (!r.inspect_body) {
    // No body processor for a body that is not given (libmodsecurity 3.0 skips the whole of phase
    // 2 when SecRequestBodyAccess is off, and the query's arguments are judged there).
    t.m_requestBodyType = modsecurity::Transaction::UnknownFormat;
    t.m_requestBodyProcessor = modsecurity::Transaction::UnknownFormat;
  }
  // The body phase runs for a request without a body too (as nginx's connector does): the CRS
  // checks there, among others, what phase 1 could not decide alone.
  if (!r.body.empty() && r.inspect_body) {
    t.appendRequestBody(bytes(r.body), r.body.size());
    if (int status = interventionStatus(t)) {  // over SecRequestBodyLimit
      return collect(t, status);
    }
  }
  t.processRequestBody();
  return collect(t, interventionStatus(t));
}

// A message transaction carries the handshake's headers, so that the CRS's checks of the request's
// form (Host, User-Agent and Accept present, ...) see the same request, but not its cookies: they
// were judged at the handshake, and REQUEST_COOKIES is read by about a hundred CRS rules (2M
// instructions per message). Nor the headers that describe the handshake's own body.
bool leftOutOfMessages(std::string_view name) {
  auto iequals = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
      return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(a[i])) !=
          std::tolower(static_cast<unsigned char>(b[i]))) {
        return false;
      }
    }
    return true;
  };
  return iequals(name, "cookie") || iequals(name, "content-type") ||
         iequals(name, "content-length") || iequals(name, "transfer-encoding");
}

}  // namespace

WafVerdict evaluateHttp(const WafRules& rules, const HttpRequest& request) {
  return runHttp(rules, request, [](modsecurity::Transaction&) {});
}

namespace {

void keepHandshake(WafWsContext& c, std::shared_ptr<const WafRules> rules, const HttpRequest& r) {
  c.rules = std::move(rules);
  c.client_ip = r.client_ip;
  c.client_port = r.client_port;
  c.server_ip = r.server_ip;
  c.server_port = r.server_port;
  c.method = r.method;
  c.path = r.uri.substr(0, r.uri.find('?'));
  c.http_version = r.http_version;
  for (const Header& hd : r.headers) {
    if (!leftOutOfMessages(hd.name)) {
      c.headers.emplace_back(hd.name, hd.value);
    }
  }
}

}  // namespace

WafHandshake evaluateHandshake(std::shared_ptr<const WafRules> rules, const HttpRequest& r,
                               WsPhase1 phase1) {
  auto c = std::make_shared<WafWsContext>();
  const bool snapshot = phase1 == WsPhase1::kOnce && phase1SnapshotUsable(rules->engine());
  WafHandshake h;
  h.verdict = runHttp(*rules, r, [&](modsecurity::Transaction& t) {
    if (snapshot) {
      c->phase1 = takePhase1(t);
    }
  });
  if (h.verdict.intervention) {
    return h;
  }
  keepHandshake(*c, std::move(rules), r);
  h.context = std::move(c);
  return h;
}

std::shared_ptr<const WafWsContext> unjudgedHandshake(std::shared_ptr<const WafRules> rules,
                                                      const HttpRequest& upgrade) {
  auto c = std::make_shared<WafWsContext>();
  keepHandshake(*c, std::move(rules), upgrade);
  return c;
}

WafVerdict evaluateMessage(const WafWsContext& c, std::string_view payload, WsPayload kind,
                           std::string_view id) {
  std::string tid(id);
  modsecurity::Transaction t(c.rules->engine(), c.rules->rulesSet(), tid.data(), nullptr);
  t.processConnection(c.client_ip.c_str(), c.client_port, c.server_ip.c_str(), c.server_port);
  t.processURI(c.path.c_str(), c.method.c_str(), c.http_version.c_str());
  for (const auto& [name, value] : c.headers) {
    t.addRequestHeader(name, value);
  }
  if (c.phase1) {
    givePhase1(*c.phase1, t);
  } else {
    t.processRequestHeaders();
    if (int status = interventionStatus(t)) {
      return collect(t, status);
    }
  }
  switch (kind) {
    case WsPayload::kJson:
      // What ctl:requestBodyProcessor=JSON (rule 200001) does for an application/json body.
      t.m_requestBodyProcessor = modsecurity::Transaction::JSONRequestBody;
      t.m_variableReqbodyProcessor.set("JSON", t.m_variableOffset);
      break;
    case WsPayload::kText:
      t.addArgument("POST", "message", std::string(payload), 0);
      break;
    case WsPayload::kBinary:
      break;
  }
  if (!payload.empty()) {
    t.appendRequestBody(bytes(payload), payload.size());
    if (int status = interventionStatus(t)) {
      return collect(t, status);
    }
  }
  t.processRequestBody();
  return collect(t, interventionStatus(t));
}

}  // namespace sluice::filters::waf
