#pragma once

// type "rules": the operator's own fast rules (filters/rules/rules.h) on requests and WebSocket
// messages (docs/filters/rules.md). RE2 sets are linear-time and a message is scanned once per
// (target, transforms) group, so rules run inline on the event loop: no pool, no waiting.
//
// Request rules on the method, path, query and headers are judged on the request head; when any
// rule looks at the body, the whole body is waited for (bounded by the route's max_body_bytes)
// and everything is judged once. The strongest action of the rules that matched wins: deny
// (the rule's status), close (the rule's close code toward the sender), drop, log. In detect mode
// matches are counted and logged, and nothing is refused.

#include <memory>
#include <string>
#include <vector>

#include "filters/audit_log.h"
#include "filters/filter.h"
#include "filters/rules/rules.h"

namespace sluice::filters::rules {

class RulesFilter : public Filter {
 public:
  RulesFilter(std::string name, std::shared_ptr<const RuleSet> rules, bool detect,
              std::shared_ptr<const AuditLog> audit);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  uint8_t phases() const override;
  std::unique_ptr<StreamFilter> create() const override;
  void bindStats(Stats& stats) override;

  const RuleSet& ruleSet() const { return *rules_; }
  bool detect() const { return detect_; }
  bool bodyRules() const { return body_rules_; }
  // Counts the verdict's matches and writes its audit line. `subject`: "request" or "message";
  // `direction`: a message's ("client", "backend"), else empty.
  void report(unsigned worker, const RulesVerdict& verdict, const StreamInfo& info,
              std::string_view subject, std::string_view direction) const;

 private:
  std::shared_ptr<const RuleSet> rules_;
  bool detect_;
  bool body_rules_ = false;
  std::shared_ptr<const AuditLog> audit_;
  std::vector<Counter> matches_;  // by rule index
};

// The action label of a rule's matches: its action, or "log" in detect mode.
const char* actionName(Action action, bool detect);

}  // namespace sluice::filters::rules
