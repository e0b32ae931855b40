#pragma once

// WafRules: one loaded ModSecurity v3 rule set (SecLang, normally the OWASP Core Rule Set) with
// the settings of one `waf` filter. Loaded once per config snapshot, warmed up, then immutable and
// shared by every worker and pool thread as shared_ptr<const WafRules>.
//
// libmodsecurity's SecLang parser keeps global state, so loads are serialised by a process-wide
// mutex. Evaluating transactions of one shared rule set from several threads is supported, but
// some structures are built lazily on first use: load() runs a few benign transactions that
// reach every collection before the rules are handed out. The CRS's in-memory IP and GLOBAL
// collections (rule 901321) are shared across threads with too little locking and grow with
// every client address, so load() removes that rule and sets tx.real_ip itself.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace modsecurity {
class ModSecurity;
class RulesSet;
}  // namespace modsecurity

namespace sluice::filters::waf {

enum class WafMode : uint8_t {
  kBlock,   // SecRuleEngine On: a match past the threshold is an intervention
  kDetect,  // SecRuleEngine DetectionOnly: matches are reported, nothing is blocked
};

struct WafSettings {
  // SecLang files or globs, included in this order after sluice's base directives. Relative paths
  // are ModSecurity's business (resolved against the working directory): pass absolute ones.
  std::vector<std::string> rules;
  int paranoia_level = 1;      // CRS tx.paranoia_level, 1..4
  int inbound_threshold = 5;   // CRS tx.inbound_anomaly_score_threshold
  int outbound_threshold = 4;  // CRS tx.outbound_anomaly_score_threshold
  WafMode mode = WafMode::kBlock;
  uint64_t request_body_limit = 13107200;         // SecRequestBodyLimit (bytes, with files)
  uint64_t request_body_no_files_limit = 131072;  // SecRequestBodyNoFilesLimit
  // The request-body directives of modsecurity.conf-recommended (rules 200000-200007: XML and
  // JSON body processors, deny on a body that fails to parse, ...). Turn off when `rules`
  // includes a modsecurity.conf of its own (the ids would be duplicated).
  bool base_rules = true;
  // CRS tx.allowed_methods (rule 911100 refuses the others): empty keeps the CRS's default,
  // "GET HEAD POST OPTIONS". Methods separated by single spaces.
  std::string allowed_methods;
  // SecLang appended after the files (inline exclusions; tests).
  std::string extra;
};

// Debian's OWASP CRS in the order /usr/share/modsecurity-crs/owasp-crs.load uses: crs-setup.conf,
// the optional REQUEST-900 exclusions, rules/*.conf, the optional RESPONSE-999 exclusions.
std::vector<std::string> debianCrs();

class WafRules;

struct WafLoadResult {
  std::shared_ptr<const WafRules> rules;  // null when error is set
  std::string error;                      // ModSecurity's message, naming the file and line
};

class WafRules {
 public:
  // Builds the SecLang text (settings, base rules, Include lines), parses it under the
  // process-wide load mutex and warms the result up. Never throws.
  static WafLoadResult load(const WafSettings& settings);

  ~WafRules();
  WafRules(const WafRules&) = delete;
  WafRules& operator=(const WafRules&) = delete;

  const WafSettings& settings() const { return settings_; }
  // The generated configuration that load() parsed (for `sluice -t` style diagnostics).
  const std::string& text() const { return text_; }

  // For the evaluator. ModSecurity's API takes non-const pointers, but evaluation only reads
  // the rule set once it is loaded.
  modsecurity::ModSecurity* engine() const { return engine_; }
  modsecurity::RulesSet* rulesSet() const { return rules_.get(); }

  // The SecLang text load() parses for `settings`.
  static std::string configText(const WafSettings& settings);

 private:
  WafRules(WafSettings settings, std::string text, modsecurity::ModSecurity* engine,
           std::unique_ptr<modsecurity::RulesSet> rules);

  WafSettings settings_;
  std::string text_;
  modsecurity::ModSecurity* engine_;  // process-wide, never freed
  std::unique_ptr<modsecurity::RulesSet> rules_;
};

}  // namespace sluice::filters::waf
