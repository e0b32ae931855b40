#include "filters/rules/rules.h"

#include <re2/re2.h>
#include <re2/set.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "conf/section.h"
#include "conf/text.h"

namespace sluice::filters::rules {

using conf::Diagnostic;
using conf::Diagnostics;
using conf::SourcePos;

struct RuleSet::Group {
  TargetKind target;
  std::string name;                  // header (lowercased) or JSON pointer
  std::vector<std::string> pointer;  // json: the pointer's reference tokens, unescaped
  std::vector<Transform> transforms;
  uint8_t directions = 0;              // message and json groups: the union of their rules'
  std::unique_ptr<re2::RE2::Set> set;  // null without pattern rules
  std::vector<uint32_t> set_rules;     // set index -> rule index
  // The same patterns one by one, for the rare input where the set's DFA runs out of memory.
  std::vector<std::unique_ptr<re2::RE2>> one_by_one;
  std::vector<uint32_t> length_rules;
};

namespace {

struct TransformName {
  std::string_view name;
  Transform transform;
};
constexpr TransformName kTransforms[] = {
    {"url_decode", Transform::kUrlDecode},
    {"lowercase", Transform::kLowercase},
    {"html_entity_decode", Transform::kHtmlEntityDecode},
    {"compress_whitespace", Transform::kCompressWhitespace},
    {"remove_whitespace", Transform::kRemoveWhitespace},
    {"trim", Transform::kTrim},
};

bool isBlank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

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

// Writes `cp` as UTF-8 at `p` (U+FFFD for what is not a scalar value); returns the end.
char* putUtf8(char* p, uint32_t cp) {
  if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    cp = 0xFFFD;
  }
  if (cp < 0x80) {
    *p++ = static_cast<char>(cp);
  } else if (cp < 0x800) {
    *p++ = static_cast<char>(0xC0 | (cp >> 6));
    *p++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *p++ = static_cast<char>(0xE0 | (cp >> 12));
    *p++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *p++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *p++ = static_cast<char>(0xF0 | (cp >> 18));
    *p++ = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *p++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *p++ = static_cast<char>(0x80 | (cp & 0x3F));
  }
  return p;
}

// The transforms write through a pointer into a buffer sized for the input: none of them makes
// its input longer (an entity is never shorter than the UTF-8 it decodes to, "&#0" and U+FFFD
// included), and std::string::push_back is an out-of-line call per byte.

size_t urlDecode(std::string_view in, char* out) {
  char* p = out;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    int hi;
    int lo;
    if (c == '+') {
      *p++ = ' ';
    } else if (c == '%' && i + 2 < in.size() && (hi = hexValue(in[i + 1])) >= 0 &&
               (lo = hexValue(in[i + 2])) >= 0) {
      *p++ = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      *p++ = c;
    }
  }
  return static_cast<size_t>(p - out);
}

size_t htmlEntityDecode(std::string_view in, char* out) {
  static constexpr std::pair<std::string_view, char> kNamed[] = {
      {"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", ' '}};
  char* p = out;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] != '&') {
      *p++ = in[i++];
      continue;
    }
    // "&name;", "&#123;" or "&#x7b;" (the ';' may be missing, as browsers allow).
    size_t j = i + 1;
    bool done = false;
    if (j < in.size() && in[j] == '#') {
      ++j;
      const bool hex = j < in.size() && (in[j] == 'x' || in[j] == 'X');
      j += hex ? 1 : 0;
      const size_t digits = j;
      uint32_t cp = 0;
      while (j < in.size() && j - digits < 8 &&
             (hex ? hexValue(in[j]) >= 0 : (in[j] >= '0' && in[j] <= '9'))) {
        cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(hexValue(in[j]));
        ++j;
      }
      if (j > digits) {
        p = putUtf8(p, cp);
        i = (j < in.size() && in[j] == ';') ? j + 1 : j;
        done = true;
      }
    } else {
      for (const auto& [name, c] : kNamed) {
        if (in.substr(j, name.size()) == name) {
          *p++ = c;
          j += name.size();
          i = (j < in.size() && in[j] == ';') ? j + 1 : j;
          done = true;
          break;
        }
      }
    }
    if (!done) {
      *p++ = in[i++];
    }
  }
  return static_cast<size_t>(p - out);
}

size_t compressWhitespace(std::string_view in, char* out) {
  char* p = out;
  bool blank = false;
  for (char c : in) {
    if (isBlank(c)) {
      if (!blank) {
        *p++ = ' ';
      }
      blank = true;
    } else {
      *p++ = c;
      blank = false;
    }
  }
  return static_cast<size_t>(p - out);
}

size_t removeWhitespace(std::string_view in, char* out) {
  char* p = out;
  for (char c : in) {
    if (!isBlank(c)) {
      *p++ = c;
    }
  }
  return static_cast<size_t>(p - out);
}

size_t lowercase(std::string_view in, char* out) {
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    out[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return in.size();
}

size_t trim(std::string_view in, char* out) {
  size_t b = 0;
  size_t e = in.size();
  while (b < e && isBlank(in[b])) {
    ++b;
  }
  while (e > b && isBlank(in[e - 1])) {
    --e;
  }
  std::memmove(out, in.data() + b, e - b);
  return e - b;
}

// Two buffers: each step reads the previous result and writes the other one.
void transform(std::span<const Transform> transforms, std::string_view in, std::string& out,
               std::string& other) {
  std::string_view current = in;
  std::string* write = &out;
  std::string* spare = &other;
  for (Transform t : transforms) {
    write->resize(current.size());
    char* p = write->data();
    size_t n = 0;
    switch (t) {
      case Transform::kUrlDecode:
        n = urlDecode(current, p);
        break;
      case Transform::kLowercase:
        n = lowercase(current, p);
        break;
      case Transform::kHtmlEntityDecode:
        n = htmlEntityDecode(current, p);
        break;
      case Transform::kCompressWhitespace:
        n = compressWhitespace(current, p);
        break;
      case Transform::kRemoveWhitespace:
        n = removeWhitespace(current, p);
        break;
      case Transform::kTrim:
        n = trim(current, p);
        break;
    }
    write->resize(n);
    current = *write;
    std::swap(write, spare);
  }
  if (current.data() != out.data()) {
    out.assign(current);
  }
}

}  // namespace

void applyTransforms(std::span<const Transform> transforms, std::string_view in, std::string& out) {
  std::string scratch;
  transform(transforms, in, out, scratch);
}

// Parses rule files into a RuleSet, collecting every error.
class RuleSetBuilder {
 public:
  void file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      diagnostics_.push_back(Diagnostic{SourcePos{path, 0, 0}, "cannot read the rule file"});
      return;
    }
    std::stringstream text;
    text << in.rdbuf();
    text_(text.str(), path, std::filesystem::path(path).parent_path());
  }

  void text_(std::string_view text, const std::string& name, const std::filesystem::path& dir) {
    toml::table root;
#if TOML_EXCEPTIONS
    try {
      root = toml::parse(text, std::string_view(name));
    } catch (const toml::parse_error& e) {
      diagnostics_.push_back(Diagnostic{conf::detail::positionOf(e.source(), name),
                                        "TOML syntax: " + std::string(e.description())});
      return;
    }
#else
    toml::parse_result parsed = toml::parse(text, std::string_view(name));
    if (!parsed) {
      diagnostics_.push_back(
          Diagnostic{conf::detail::positionOf(parsed.error().source(), name),
                     "TOML syntax: " + std::string(parsed.error().description())});
      return;
    }
    root = std::move(parsed).table();
#endif
    const conf::detail::FileContext file{name, dir};
    conf::detail::Section top(root, "", file, diagnostics_);
    for (const toml::table* t : top.tables("rules")) {
      rule(*t, file);
    }
    top.finish();
  }

  RulesLoadResult finish() {
    const auto failed = [&] {
      return std::any_of(diagnostics_.begin(), diagnostics_.end(),
                         [](const Diagnostic& d) { return d.error(); });
    };
    if (!failed()) {
      compile();
    }
    RulesLoadResult result;
    if (!failed()) {
      result.rules = std::shared_ptr<const RuleSet>(set_.release());
    }
    result.diagnostics = std::move(diagnostics_);
    return result;
  }

 private:
  void rule(const toml::table& table, const conf::detail::FileContext& file) {
    conf::detail::Section s(table, "[[rules]]", file, diagnostics_);
    Rule r;
    r.pos = s.pos();
    const size_t errors = diagnostics_.size();
    s.require({"id", "target", "action"});

    s.read("id", r.id, [&](const toml::node& node, std::string& message) {
      if (auto i = node.value_exact<int64_t>()) {
        return std::optional<std::string>(std::to_string(*i));
      }
      auto text = node.value_exact<std::string_view>();
      if (!text || text->empty()) {
        message = s.mustBe("id", "a non-empty string or an integer", node);
        return std::optional<std::string>();
      }
      return std::optional<std::string>(*text);
    });
    if (!r.id.empty()) {
      auto [it, fresh] = ids_.emplace(r.id, r.pos);
      if (!fresh) {
        s.error("id", "duplicate rule id " + conf::detail::quote(r.id) + " (first at " +
                          conf::detail::formatPos(it->second) + ")");
      }
    }

    std::string target;
    const bool has_target = s.string("target", target);
    if (has_target && !parseTarget(target, r, s)) {
      // reported
    }
    const bool on_messages = r.target == TargetKind::kMessage || r.target == TargetKind::kJson;

    std::string direction;
    if (s.oneOf("direction", direction, {"client", "backend", "both"})) {
      if (has_target && !on_messages) {
        s.error("direction", "'direction' applies to message and json: targets only");
      }
      r.directions = direction == "client"    ? kFromClient
                     : direction == "backend" ? kFromBackend
                                              : kFromClient | kFromBackend;
    }

    std::vector<std::string> transforms;
    std::vector<SourcePos> where;
    if (s.strings("transforms", transforms, &where)) {
      for (size_t i = 0; i < transforms.size(); ++i) {
        auto known = std::find_if(std::begin(kTransforms), std::end(kTransforms),
                                  [&](const TransformName& t) { return t.name == transforms[i]; });
        if (known == std::end(kTransforms)) {
          std::vector<std::string> names;
          for (const TransformName& t : kTransforms) {
            names.emplace_back(t.name);
          }
          s.error(where[i], "unknown transform " + conf::detail::quote(transforms[i]) +
                                conf::detail::didYouMean(transforms[i], names));
        } else {
          r.transforms.push_back(known->transform);
        }
      }
    }

    const bool has_pattern = s.string("pattern", r.pattern);
    const bool has_length =
        s.integer("max_length", r.max_length, 0, std::numeric_limits<int64_t>::max());
    if (has_pattern && has_length) {
      s.error("max_length", "a rule has either 'pattern' or 'max_length', not both");
    } else if (!has_pattern && !has_length && s.get("pattern") == nullptr &&
               s.get("max_length") == nullptr) {
      s.error(s.pos(), "[[rules]] needs 'pattern' or 'max_length'");
    }
    if (has_pattern) {
      re2::RE2 check(r.pattern, options());
      if (!check.ok()) {
        s.error("pattern", "bad pattern: " + check.error());
      }
    }

    std::string action;
    if (s.oneOf("action", action, {"deny", "drop", "close", "log"})) {
      r.action = action == "deny"    ? Action::kDeny
                 : action == "drop"  ? Action::kDrop
                 : action == "close" ? Action::kClose
                                     : Action::kLog;
      if (has_target && on_messages && r.action == Action::kDeny) {
        s.error("action", "a message rule drops or closes: 'deny' is for request targets");
      }
      if (has_target && !on_messages && (r.action == Action::kDrop || r.action == Action::kClose)) {
        s.error("action", "a request rule denies: 'drop' and 'close' are for message targets");
      }
    }
    if (s.integer("status", r.status, 400, 599) && r.action != Action::kDeny) {
      s.error("status", "'status' goes with action = \"deny\"");
    }
    if (s.integer("close_code", r.close_code, 1000, 4999) && r.action != Action::kClose) {
      s.error("close_code", "'close_code' goes with action = \"close\"");
    }
    s.finish();
    if (diagnostics_.size() == errors) {
      set_->rules_.push_back(std::move(r));
    }
  }

  bool parseTarget(const std::string& text, Rule& r, conf::detail::Section& s) {
    static const std::pair<std::string_view, TargetKind> kPlain[] = {
        {"method", TargetKind::kMethod},
        {"path", TargetKind::kPath},
        {"query", TargetKind::kQuery},
        {"body", TargetKind::kBody},
        {"message", TargetKind::kMessage}};
    for (const auto& [name, kind] : kPlain) {
      if (text == name) {
        r.target = kind;
        return true;
      }
    }
    if (text.starts_with("header:")) {
      r.target = TargetKind::kHeader;
      r.target_name = conf::detail::toLower(text.substr(7));
      if (!conf::detail::isToken(r.target_name)) {
        s.error("target", "bad header name in " + conf::detail::quote(text));
        return false;
      }
      return true;
    }
    if (text.starts_with("json:")) {
      r.target = TargetKind::kJson;
      r.target_name = text.substr(5);
      std::string why;
      if (!splitPointer(r.target_name, nullptr, why)) {
        s.error("target", "bad JSON pointer " + conf::detail::quote(r.target_name) + ": " + why);
        return false;
      }
      return true;
    }
    std::vector<std::string> names{"method",  "path",    "query", "body",
                                   "message", "header:", "json:"};
    s.error("target", "unknown target " + conf::detail::quote(text) +
                          " (method, path, query, body, header:NAME, message or json:/POINTER)" +
                          conf::detail::didYouMean(text, names));
    return false;
  }

 public:
  // RFC 6901: "" is the whole document, otherwise '/'-separated tokens with ~1 for '/' and ~0
  // for '~'.
  static bool splitPointer(std::string_view p, std::vector<std::string>* tokens, std::string& why) {
    if (p.empty()) {
      return true;
    }
    if (p[0] != '/') {
      why = "must be empty or start with '/'";
      return false;
    }
    std::string token;
    for (size_t i = 1; i <= p.size(); ++i) {
      if (i == p.size() || p[i] == '/') {
        if (tokens != nullptr) {
          tokens->push_back(token);
        }
        token.clear();
      } else if (p[i] == '~') {
        if (i + 1 < p.size() && (p[i + 1] == '0' || p[i + 1] == '1')) {
          token.push_back(p[i + 1] == '0' ? '~' : '/');
          ++i;
        } else {
          why = "'~' must be followed by 0 or 1";
          return false;
        }
      } else {
        token.push_back(p[i]);
      }
    }
    return true;
  }

  static re2::RE2::Options options() {
    re2::RE2::Options o;
    o.set_log_errors(false);
    o.set_max_mem(64 << 20);
    return o;
  }

 private:
  void compile() {
    RuleSet& set = *set_;
    // Groups in order of first appearance, so evaluation order follows the files.
    std::map<std::tuple<TargetKind, std::string, std::vector<Transform>>, size_t> index;
    for (uint32_t i = 0; i < set.rules_.size(); ++i) {
      const Rule& r = set.rules_[i];
      auto key = std::make_tuple(r.target, r.target_name, r.transforms);
      auto [it, fresh] = index.emplace(key, set.groups_.size());
      if (fresh) {
        auto g = std::make_unique<RuleSet::Group>();
        g->target = r.target;
        g->name = r.target_name;
        g->transforms = r.transforms;
        if (r.target == TargetKind::kJson) {
          std::string why;
          splitPointer(g->name, &g->pointer, why);
        }
        set.groups_.push_back(std::move(g));
      }
      RuleSet::Group& g = *set.groups_[it->second];
      const bool on_messages = r.target == TargetKind::kMessage || r.target == TargetKind::kJson;
      if (on_messages) {
        g.directions |= r.directions;
        set.message_directions_ |= r.directions;
      } else {
        set.has_request_rules_ = true;
      }
      if (r.pattern.empty()) {
        g.length_rules.push_back(i);
        continue;
      }
      if (!g.set) {
        g.set = std::make_unique<re2::RE2::Set>(options(), re2::RE2::UNANCHORED);
      }
      std::string error;
      if (g.set->Add(r.pattern, &error) < 0) {
        diagnostics_.push_back(
            Diagnostic{r.pos, "rule " + conf::detail::quote(r.id) + ": bad pattern: " + error});
        continue;
      }
      g.set_rules.push_back(i);
      g.one_by_one.push_back(std::make_unique<re2::RE2>(r.pattern, options()));
    }
    for (const auto& g : set.groups_) {
      if (g->set && !g->set->Compile()) {
        const Rule& first = set.rules_[g->set_rules.front()];
        diagnostics_.push_back(Diagnostic{first.pos, "the patterns on target of rule " +
                                                         conf::detail::quote(first.id) +
                                                         " are too large to compile together"});
      }
    }
  }

  std::unique_ptr<RuleSet> set_{new RuleSet()};
  Diagnostics diagnostics_;
  std::map<std::string, SourcePos> ids_;
};

RuleSet::RuleSet() = default;
RuleSet::~RuleSet() = default;

RulesLoadResult RuleSet::load(const std::vector<std::string>& files) {
  RuleSetBuilder b;
  for (const std::string& f : files) {
    b.file(f);
  }
  return b.finish();
}

RulesLoadResult RuleSet::loadString(std::string_view text, const std::string& name) {
  RuleSetBuilder b;
  b.text_(text, name, std::filesystem::current_path());
  return b.finish();
}

namespace {

// Per-evaluation state: which rules matched (in rule order at the end) and scratch buffers.
class Matcher {
 public:
  explicit Matcher(const std::vector<Rule>& rules) : rules_(rules) {}

  void scan(const RuleSet::Group& g, std::string_view value, uint8_t direction) {
    std::string_view v = value;
    if (!g.transforms.empty()) {
      transform(g.transforms, value, transformed_, scratch_);
      v = transformed_;
    }
    if (g.set) {
      hits_.clear();
      re2::RE2::Set::ErrorInfo info{};
      if (g.set->Match(v, &hits_, &info)) {
        for (int h : hits_) {
          add(g.set_rules[static_cast<size_t>(h)], direction);
        }
      } else if (info.kind == re2::RE2::Set::kOutOfMemory) {
        for (size_t k = 0; k < g.one_by_one.size(); ++k) {
          if (re2::RE2::PartialMatch(v, *g.one_by_one[k])) {
            add(g.set_rules[k], direction);
          }
        }
      }
    }
    for (uint32_t i : g.length_rules) {
      if (v.size() > rules_[i].max_length) {
        add(i, direction);
      }
    }
  }

  RulesVerdict verdict() {
    std::sort(matched_.begin(), matched_.end());
    matched_.erase(std::unique(matched_.begin(), matched_.end()), matched_.end());
    RulesVerdict v;
    v.matched.reserve(matched_.size());
    for (uint32_t i : matched_) {
      const Rule* r = &rules_[i];
      v.matched.push_back(r);
      if (v.strongest == nullptr || r->action > v.strongest->action) {
        v.strongest = r;
      }
    }
    return v;
  }

 private:
  void add(uint32_t rule, uint8_t direction) {
    if (direction == 0 || (rules_[rule].directions & direction) != 0) {
      matched_.push_back(rule);
    }
  }

  const std::vector<Rule>& rules_;
  std::vector<uint32_t> matched_;
  std::vector<int> hits_;
  std::string transformed_;
  std::string scratch_;
};

// JSON nested deeper than this is not looked into by json: rules (nlohmann's dump() recurses).
constexpr int kMaxJsonDepth = 256;

bool shallowEnough(std::string_view json) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return false;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    if (x >= 'A' && x <= 'Z') {
      x = static_cast<char>(x - 'A' + 'a');
    }
    if (x != b[i]) {
      return false;
    }
  }
  return true;
}

// The value a JSON pointer points to in `doc`: strings as they are, anything else as compact
// JSON text. False when there is nothing there.
bool pointTo(const nlohmann::json& doc, const std::vector<std::string>& tokens, std::string& out) {
  const nlohmann::json* at = &doc;
  for (const std::string& t : tokens) {
    if (at->is_object()) {
      auto it = at->find(t);
      if (it == at->end()) {
        return false;
      }
      at = &*it;
    } else if (at->is_array()) {
      if (t.empty() || t.size() > 9 ||
          !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          (t.size() > 1 && t[0] == '0')) {
        return false;
      }
      const size_t k = std::stoul(t);
      if (k >= at->size()) {
        return false;
      }
      at = &(*at)[k];
    } else {
      return false;
    }
  }
  if (at->is_string()) {
    out = at->get_ref<const std::string&>();
  } else {
    out = at->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return true;
}

}  // namespace

RulesVerdict RuleSet::evaluateRequest(const RequestInput& r) const {
  Matcher m(rules_);
  if (!has_request_rules_) {
    return m.verdict();
  }
  for (const auto& g : groups_) {
    switch (g->target) {
      case TargetKind::kMethod:
        m.scan(*g, r.method, 0);
        break;
      case TargetKind::kPath:
        m.scan(*g, r.path, 0);
        break;
      case TargetKind::kQuery:
        m.scan(*g, r.query, 0);
        break;
      case TargetKind::kBody:
        m.scan(*g, r.body, 0);
        break;
      case TargetKind::kHeader:
        for (const Header& h : r.headers) {
          if (iequals(h.name, g->name)) {
            m.scan(*g, h.value, 0);
          }
        }
        break;
      case TargetKind::kMessage:
      case TargetKind::kJson:
        break;
    }
  }
  return m.verdict();
}

RulesVerdict RuleSet::evaluateMessage(std::string_view payload, uint8_t direction,
                                      bool text) const {
  Matcher m(rules_);
  if ((message_directions_ & direction) == 0) {
    return m.verdict();
  }
  // Parsed at most once, on the first json: group that applies; never for a binary message.
  enum class Parsed : uint8_t { kNotYet, kJson, kNotJson } parsed = Parsed::kNotYet;
  nlohmann::json doc;
  std::string value;
  for (const auto& g : groups_) {
    if ((g->directions & direction) == 0) {
      continue;
    }
    if (g->target == TargetKind::kMessage) {
      m.scan(*g, payload, direction);
    } else if (g->target == TargetKind::kJson && text) {
      if (parsed == Parsed::kNotYet) {
        const bool shallow = shallowEnough(payload);
        if (shallow) {
          doc = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
        }
        parsed = shallow && !doc.is_discarded() ? Parsed::kJson : Parsed::kNotJson;
      }
      if (parsed == Parsed::kJson && pointTo(doc, g->pointer, value)) {
        m.scan(*g, value, direction);
      }
    }
  }
  return m.verdict();
}

}  // namespace sluice::filters::rules
