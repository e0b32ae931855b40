#pragma once

// origin: an allow-list of Origin values for WebSocket upgrades, the defence against cross-site
// WebSocket hijacking. Entries are exact ("https://app.example.com") or one wildcard label
// ("https://*.example.com": any subdomain, not the bare domain). Comparison ignores case and a
// default port (":443" for https, ":80" for http). A missing Origin is rejected unless
// allow_missing = true (non-browser clients send none). Plain HTTP requests pass untouched.

#include <string>
#include <vector>

#include "filters/filter.h"

namespace sluice::filters {

class OriginFilter : public Filter {
 public:
  OriginFilter(std::string name, std::vector<std::string> allow, bool allow_missing);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  bool allowed(std::string_view origin) const;
  uint8_t phases() const override { return kRequestHead; }
  std::unique_ptr<StreamFilter> create() const override;

  // "HTTPS://App.Example.com:443" -> "https://app.example.com"; empty when not an origin.
  static std::string normalize(std::string_view origin);

 private:
  struct Pattern {
    std::string scheme_host;  // exact: whole origin; wildcard: "https://" prefix
    std::string suffix;       // wildcard: ".example.com" (with port if any); empty = exact
  };
  std::vector<Pattern> patterns_;
  bool allow_missing_;
};

}  // namespace sluice::filters
