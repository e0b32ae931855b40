#pragma once

// type "api_key": requests (and WebSocket upgrades) must present a key from a keys file
// (docs/filters/api_key.md). The file holds `name: sha256-hex` lines (KeyStore), so no key is
// kept in plaintext; the presented key is read from one header or query parameter, hashed, and
// compared in constant time with every entry. The matching key's name goes to the backend in a
// header (any client-sent header of that name is removed first). The file is read when the
// config is loaded, so a reload picks up its changes.
//
// Refusals answer 401 (`WWW-Authenticate: ApiKey`) before any 101; every decision is counted in
// sluice_auth_decisions_total{filter,result,reason} and named in the access log's `auth` field.

#include <memory>
#include <string>

#include "filters/api_key/key_store.h"
#include "filters/filter.h"

namespace sluice::filters::api_key {

class ApiKeyFilter : public Filter {
 public:
  struct Settings {
    bool from_query = false;         // else a header
    std::string name = "X-API-Key";  // the header or parameter
    std::string text = "header:X-API-Key";
    std::string forward_name_header = "X-API-Key-Name";  // empty: not forwarded
    bool strip_key = false;
  };

  ApiKeyFilter(std::string name, Settings settings, KeyStore store);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  uint8_t phases() const override { return kRequestHead; }
  std::unique_ptr<StreamFilter> create() const override;
  void bindStats(Stats& stats) override;

  const Settings& settings() const { return settings_; }
  const KeyStore& store() const { return store_; }

  struct Counters {
    Counter allow, missing, unknown, malformed;
  };
  const Counters& counters() const { return counters_; }

 private:
  Settings settings_;
  KeyStore store_;
  Counters counters_;
};

}  // namespace sluice::filters::api_key
