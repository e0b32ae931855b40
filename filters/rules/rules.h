#pragma once

// The operator's own fast rules (the `rules` filter's engine): RE2 patterns and length limits on
// parts of HTTP requests and of WebSocket messages, read from TOML rule files:
//
//   [[rules]]
//   id = "no-drop-table"                # string or integer, unique across the files
//   target = "message"                  # method | path | query | body | header:NAME | message |
//                                       # json:/json/pointer (in a JSON message)
//   direction = "client"                # message and json targets: client | backend | both
//   transforms = ["url_decode", "lowercase"]
//   pattern = 'drop\s+table'            # RE2 syntax, unanchored; or instead:
//   # max_length = 4096                 # matches a value longer than this many bytes
//   action = "close"                    # deny (requests, with `status`), drop or close (messages,
//                                       # close with `close_code`), log (any)
//
// All patterns of one (target, transforms) pair are compiled into one RE2::Set, so a value is
// transformed once and scanned once however many rules look at it; a JSON message is parsed once
// for all of its json: rules. A RuleSet is immutable after loading and safe to share across
// threads; evaluation is linear-time and fast enough for the event loop (see the report).

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace sluice::filters::rules {

enum class Action : uint8_t { kNone, kLog, kDrop, kClose, kDeny };  // weakest to strongest

enum class TargetKind : uint8_t { kMethod, kPath, kQuery, kHeader, kBody, kMessage, kJson };

enum class Transform : uint8_t {
  kUrlDecode,           // %XX and '+' (as in query strings and form bodies)
  kLowercase,           // ASCII
  kHtmlEntityDecode,    // &lt; &gt; &amp; &quot; &apos; &nbsp; &#NN; &#xHH;
  kCompressWhitespace,  // runs of blanks become one space
  kRemoveWhitespace,
  kTrim,
};

// Message directions a rule applies to (a bit set).
inline constexpr uint8_t kFromClient = 1;   // client -> backend
inline constexpr uint8_t kFromBackend = 2;  // backend -> client

struct Rule {
  std::string id;
  conf::SourcePos pos;  // the rule's table
  TargetKind target = TargetKind::kBody;
  std::string target_name;  // header: the lowercased name; json: the pointer ("/a/b")
  uint8_t directions = kFromClient;
  std::vector<Transform> transforms;
  std::string pattern;      // empty for a max_length rule
  uint64_t max_length = 0;  // max_length rules: the longest value that does not match
  Action action = Action::kLog;
  uint16_t status = 403;       // deny
  uint16_t close_code = 1008;  // close
};

struct Header {
  std::string_view name;
  std::string_view value;
};

// What request rules see. Views, valid during the call.
struct RequestInput {
  std::string_view method;
  std::string_view path;   // without the query
  std::string_view query;  // after '?', as received (url_decode it with a transform)
  std::span<const Header> headers;
  std::string_view body;
};

struct RulesVerdict {
  std::vector<const Rule*> matched;  // in rule order; valid while the RuleSet lives
  const Rule* strongest = nullptr;   // the first matched rule with the strongest action

  bool any() const { return !matched.empty(); }
  Action action() const { return strongest != nullptr ? strongest->action : Action::kNone; }
};

class RuleSet;

struct RulesLoadResult {
  std::shared_ptr<const RuleSet> rules;  // null when any diagnostic is an error
  conf::Diagnostics diagnostics;         // every problem of every file, "file:line:col: why"
};

class RuleSet {
 public:
  // Reads and compiles the rule files (in order). Never throws.
  static RulesLoadResult load(const std::vector<std::string>& files);
  // Same from a string; `name` is the file name in diagnostics.
  static RulesLoadResult loadString(std::string_view text, const std::string& name);

  ~RuleSet();
  RuleSet(const RuleSet&) = delete;
  RuleSet& operator=(const RuleSet&) = delete;

  RulesVerdict evaluateRequest(const RequestInput& request) const;
  // One whole (reassembled, inflated) message. `direction` is kFromClient or kFromBackend; json:
  // rules look into text messages that parse as JSON and match nothing in any other.
  RulesVerdict evaluateMessage(std::string_view payload, uint8_t direction, bool text) const;

  const std::vector<Rule>& rules() const { return rules_; }
  bool hasRequestRules() const { return has_request_rules_; }
  bool hasMessageRules(uint8_t direction) const { return (message_directions_ & direction) != 0; }
  size_t groupCount() const { return groups_.size(); }

  struct Group;  // one (target, transforms) pair: its RE2::Set and length rules

 private:
  RuleSet();

  std::vector<Rule> rules_;
  std::vector<std::unique_ptr<Group>> groups_;
  bool has_request_rules_ = false;
  uint8_t message_directions_ = 0;
  friend class RuleSetBuilder;
};

// Applies `transforms` in order to `in`, into `out` (exposed for tests).
void applyTransforms(std::span<const Transform> transforms, std::string_view in, std::string& out);

}  // namespace sluice::filters::rules
