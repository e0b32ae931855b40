// The registry: filter types by name, and the builders that read each type's keys.

#include "filters/api_key/api_key_filter.h"
#include "filters/filter.h"
#include "filters/jwt/jwt_filter.h"
#include "filters/message_limits/message_limits.h"
#include "filters/options.h"
#include "filters/origin/origin.h"
#include "filters/ratelimit/ratelimit.h"
#include "filters/rules/rules_filter.h"
#include "filters/waf/waf_filter.h"
#ifdef SLUICE_TEST_FILTERS
#include "filters/testing/test_filter.h"
#endif

namespace sluice::filters {

const char* directionName(Direction d) {
  return d == Direction::kDownstreamToUpstream ? "downstream_to_upstream"
                                               : "upstream_to_downstream";
}

FilterPtr OriginFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  auto allow = o.strings("allow").value_or(std::vector<std::string>{});
  bool allow_missing = o.boolean("allow_missing").value_or(false);
  o.finish();
  for (const std::string& a : allow) {
    std::string n = normalize(a);
    size_t star = n.find('*');
    bool bad_wildcard = star != std::string::npos && n.compare(star - 3, 5, "://*.") != 0;
    if (n.empty() || bad_wildcard ||
        n.find('*', star == std::string::npos ? 0 : star + 1) != std::string::npos) {
      o.error("allow", "'" + a +
                           "' is not an origin: use \"https://host\", \"http://host:port\" or "
                           "\"https://*.example.com\"");
    }
  }
  if (allow.empty() && !allow_missing) {
    o.error("type", "filter '" + config.name + "' (origin) allows nothing: set 'allow'");
  }
  if (!o.ok()) {
    return nullptr;
  }
  return std::make_shared<OriginFilter>(config.name, std::move(allow), allow_missing);
}

FilterPtr MessageLimitsFilter::build(const conf::FilterConfig& config,
                                     conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  uint64_t max = o.size("max_message_bytes").value_or(0);
  bool text = true;
  bool binary = true;
  if (auto types = o.strings("allow_types")) {
    text = binary = false;
    for (const std::string& t : *types) {
      if (t == "text") {
        text = true;
      } else if (t == "binary") {
        binary = true;
      } else {
        o.error("allow_types", "unknown message type '" + t + "' (known: text, binary)");
      }
    }
  }
  o.finish();
  if (!o.ok()) {
    return nullptr;
  }
  return std::make_shared<MessageLimitsFilter>(config.name, max, text, binary);
}

FilterPtr buildFilter(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  if (config.type == "origin") {
    return OriginFilter::build(config, diagnostics);
  }
  if (config.type == "message_limits") {
    return MessageLimitsFilter::build(config, diagnostics);
  }
  if (config.type == "jwt") {
    return jwt::JwtFilter::build(config, diagnostics);
  }
  if (config.type == "api_key") {
    return api_key::ApiKeyFilter::build(config, diagnostics);
  }
  if (config.type == "ratelimit") {
    return ratelimit::RateLimitFilter::build(config, diagnostics);
  }
  if (config.type == "waf") {
    return waf::WafFilter::build(config, diagnostics);
  }
  if (config.type == "rules") {
    return rules::RulesFilter::build(config, diagnostics);
  }
#ifdef SLUICE_TEST_FILTERS
  if (config.type == "test") {
    return TestFilter::build(config, diagnostics);
  }
#endif
  Options o(config, diagnostics);
  o.error("type", "unknown filter type '" + config.type +
                      "' (known: origin, message_limits, jwt, api_key, ratelimit, waf, rules)");
  return nullptr;
}

void validateFilterConfig(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  buildFilter(config, diagnostics);
}

}  // namespace sluice::filters
