#include "filters/rules/rules_filter.h"

#include <filesystem>

#include "filters/options.h"
#include "filters/waf/waf_audit.h"

namespace sluice::filters::rules {

const char* actionName(Action action, bool detect) {
  if (detect) {
    return "log";
  }
  switch (action) {
    case Action::kDeny:
      return "deny";
    case Action::kClose:
      return "close";
    case Action::kDrop:
      return "drop";
    case Action::kLog:
    case Action::kNone:
      break;
  }
  return "log";
}

namespace {

class RulesStream final : public StreamFilter {
 public:
  explicit RulesStream(const RulesFilter& f) : f_(f), set_(f.ruleSet()) {}

  Status onRequestHead(RequestHead& head) override {
    if (!set_.hasRequestRules()) {
      return Status::kContinue;
    }
    head_ = &head;
    if (f_.bodyRules()) {
      return Status::kStopAndBuffer;
    }
    return judgeRequest({});
  }

  Status onRequestBody(std::string_view data, bool end) override {
    if (head_ == nullptr || !end) {
      return Status::kContinue;
    }
    return judgeRequest(data);
  }

  Status onMessage(Message& m) override {
    const bool from_client = m.direction() == Direction::kDownstreamToUpstream;
    const uint8_t direction = from_client ? kFromClient : kFromBackend;
    if (!set_.hasMessageRules(direction)) {
      return Status::kContinue;
    }
    RulesVerdict v = set_.evaluateMessage(m.payload(), direction, m.type() == MessageType::kText);
    if (!v.any()) {
      return Status::kContinue;
    }
    f_.report(worker(), v, callbacks().info(), "message", from_client ? "client" : "backend");
    if (f_.detect()) {
      return Status::kContinue;
    }
    const Rule& r = *v.strongest;
    if (r.action == Action::kClose) {
      callbacks().closeWebSocket(r.close_code, "message refused by rule " + r.id);
      return Status::kStop;
    }
    if (r.action == Action::kDrop) {
      callbacks().dropMessage("message dropped by rule " + r.id);
      return Status::kStop;
    }
    return Status::kContinue;
  }

 private:
  unsigned worker() { return callbacks().dispatcher().workerId(); }

  Status judgeRequest(std::string_view body) {
    const RequestHead& head = *head_;
    head_ = nullptr;
    std::string_view url = head.url;
    const size_t q = url.find('?');
    headers_.clear();
    headers_.reserve(head.headers.size());
    for (const filters::Header& h : head.headers) {
      headers_.push_back({h.name, h.value});
    }
    RequestInput in;
    in.method = head.method;
    in.path = url.substr(0, q);
    in.query = q == std::string_view::npos ? std::string_view() : url.substr(q + 1);
    in.headers = headers_;
    in.body = body;
    RulesVerdict v = set_.evaluateRequest(in);
    if (!v.any()) {
      return Status::kContinue;
    }
    f_.report(worker(), v, callbacks().info(), "request", {});
    if (!f_.detect() && v.action() == Action::kDeny) {
      callbacks().sendLocalReply(v.strongest->status, "request refused by rule " + v.strongest->id);
      return Status::kStop;
    }
    return Status::kContinue;
  }

  const RulesFilter& f_;  // kept alive by the stream's FilterManager
  const RuleSet& set_;
  const RequestHead* head_ = nullptr;  // valid until the head phase ends
  std::vector<Header> headers_;
};

}  // namespace

RulesFilter::RulesFilter(std::string name, std::shared_ptr<const RuleSet> rules, bool detect,
                         std::shared_ptr<const AuditLog> audit)
    : Filter(std::move(name)), rules_(std::move(rules)), detect_(detect), audit_(std::move(audit)) {
  for (const Rule& r : rules_->rules()) {
    body_rules_ = body_rules_ || r.target == TargetKind::kBody;
  }
  matches_.resize(rules_->rules().size());
}

uint8_t RulesFilter::phases() const {
  uint8_t p = 0;
  if (rules_->hasRequestRules()) {
    p |= kRequestHead;
  }
  if (body_rules_) {
    p |= kRequestBody;
  }
  if (rules_->hasMessageRules(kFromClient | kFromBackend)) {
    p |= kMessage;
  }
  return p;
}

std::unique_ptr<StreamFilter> RulesFilter::create() const {
  return std::make_unique<RulesStream>(*this);
}

void RulesFilter::bindStats(Stats& stats) {
  const std::vector<Rule>& rules = rules_->rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    matches_[i] = stats.counter("sluice_rules_matches_total", "Rule matches, by rule and action.",
                                {{"filter", name()},
                                 {"rule", rules[i].id},
                                 {"action", actionName(rules[i].action, detect_)}});
  }
}

void RulesFilter::report(unsigned worker, const RulesVerdict& v, const StreamInfo& info,
                         std::string_view subject, std::string_view direction) const {
  const Rule* first = rules_->rules().data();
  for (const Rule* r : v.matched) {
    matches_[static_cast<size_t>(r - first)].inc(worker);
  }
  if (!audit_->enabled()) {
    return;
  }
  std::string line = "{\"type\":\"rules\",\"time\":\"" + AuditLog::now() + "\",\"filter\":\"";
  const auto text = [&](std::string_view s) { waf::appendJsonEscaped(line, s, 256); };
  text(name());
  line += "\",\"request_id\":\"";
  text(info.request_id);
  line += "\",\"client_ip\":\"";
  text(info.client_ip);
  line += "\",\"route\":\"";
  text(info.route);
  line += "\",\"subject\":\"";
  line += subject;
  if (!direction.empty()) {
    line += "\",\"direction\":\"";
    line += direction;
  }
  line += "\",\"action\":\"";
  line += actionName(v.action(), detect_);
  line += "\",\"rules\":[";
  for (size_t i = 0; i < v.matched.size(); ++i) {
    line += i == 0 ? "{\"id\":\"" : ",{\"id\":\"";
    text(v.matched[i]->id);
    line += "\",\"action\":\"";
    line += actionName(v.matched[i]->action, detect_);
    line += "\"}";
  }
  line += "]}";
  audit_->write(line);
}

FilterPtr RulesFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  const std::filesystem::path& dir = o.file().dir;
  std::vector<std::string> files;
  if (auto f = o.strings("files")) {
    for (const std::string& name : *f) {
      files.push_back(name.empty() || name[0] == '/' ? name
                                                     : (dir / name).lexically_normal().string());
    }
  }
  if (files.empty()) {
    o.error("files", "filter '" + config.name + "' (rules) has no rule files: set 'files'");
  }
  bool detect = o.oneOf("mode", {"block", "detect"}).value_or("block") == "detect";
  std::string audit_where = AuditLog::where(o.string("audit_log"), dir);
  o.finish();
  if (!o.ok()) {
    return nullptr;
  }
  std::string why;
  std::shared_ptr<const AuditLog> audit = AuditLog::open(audit_where, &why);
  if (!audit) {
    o.error("audit_log", why);
    return nullptr;
  }
  RulesLoadResult loaded = RuleSet::load(files);
  if (!loaded.rules) {
    // The rule files' own problems, each at its file:line:col. (Warnings alone do not stop a
    // load, and the proxy refuses a config with any diagnostic: they are not passed on.)
    diagnostics.insert(diagnostics.end(), loaded.diagnostics.begin(), loaded.diagnostics.end());
    return nullptr;
  }
  return std::make_shared<RulesFilter>(config.name, std::move(loaded.rules), detect,
                                       std::move(audit));
}

}  // namespace sluice::filters::rules
