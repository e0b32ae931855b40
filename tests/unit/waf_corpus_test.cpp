// Detection and false-positive rates of the CRS through sluice's WAF engine, over the small corpus
// in tests/waf/corpus: each attack payload in a query argument, a urlencoded body, a JSON body and
// a cookie, and as WebSocket text and JSON messages; benign HTTP requests and WebSocket messages.
// Prints the rates at paranoia levels 1 and 2 (the report) and checks a floor at PL1.

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "filters/waf/waf_eval.h"
#include "filters/waf/waf_rules.h"

namespace sluice::filters::waf {
namespace {

const std::string kCorpus = std::string(SLUICE_SOURCE_DIR) + "/tests/waf/corpus/";

std::vector<std::string> lines(const std::string& file) {
  std::ifstream in(kCorpus + file);
  EXPECT_TRUE(in) << kCorpus + file;
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') {
      out.push_back(line);
    }
  }
  return out;
}

std::string urlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

struct Owned {
  std::string method = "GET";
  std::string uri;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

WafVerdict run(const WafRules& rules, const Owned& o) {
  std::vector<Header> h;
  for (const auto& [k, v] : o.headers) {
    h.push_back({k, v});
  }
  HttpRequest r;
  r.id = "corpus";
  r.client_ip = "198.51.100.7";
  r.client_port = 40000;
  r.server_ip = "198.51.100.1";
  r.server_port = 443;
  r.method = o.method;
  r.uri = o.uri;
  r.headers = h;
  r.body = o.body;
  return evaluateHttp(rules, r);
}

Owned browser(std::string uri) {
  Owned o;
  o.uri = std::move(uri);
  o.headers = {
      {"Host", "app.example.com"},
      {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"},
      {"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
      {"Accept-Language", "en-US,en;q=0.5"}};
  return o;
}

Owned withBody(std::string uri, std::string type, std::string body) {
  Owned o = browser(std::move(uri));
  o.method = "POST";
  o.headers.emplace_back("Content-Type", std::move(type));
  o.headers.emplace_back("Content-Length", std::to_string(body.size()));
  o.body = std::move(body);
  return o;
}

struct Rate {
  int hit = 0;
  int total = 0;
  double percent() const { return total == 0 ? 0 : 100.0 * hit / total; }
  void add(bool h) {
    hit += h ? 1 : 0;
    ++total;
  }
};

struct Rates {
  Rate http_detect, ws_detect, http_fp, ws_fp;
  std::vector<std::string> misses;
  std::vector<int> http_fp_rules;  // the rules behind HTTP false positives
};

Rates measure(int paranoia) {
  WafSettings s;
  s.rules = debianCrs();
  s.paranoia_level = paranoia;
  WafLoadResult loaded = WafRules::load(s);
  EXPECT_TRUE(loaded.rules) << loaded.error;
  const WafRules& rules = *loaded.rules;
  Rates r;

  Owned upgrade = browser("/chat?room=general");
  upgrade.headers.emplace_back("Upgrade", "websocket");
  upgrade.headers.emplace_back("Connection", "Upgrade");
  upgrade.headers.emplace_back("Sec-WebSocket-Version", "13");
  upgrade.headers.emplace_back("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
  std::vector<Header> uh;
  for (const auto& [k, v] : upgrade.headers) {
    uh.push_back({k, v});
  }
  HttpRequest hs;
  hs.client_ip = "198.51.100.7";
  hs.server_ip = "198.51.100.1";
  hs.uri = upgrade.uri;
  hs.headers = uh;
  WafHandshake handshake = evaluateHandshake(loaded.rules, hs);
  EXPECT_TRUE(handshake.context);
  if (!handshake.context) {
    return r;
  }

  for (const std::string& line : lines("attacks.tsv")) {
    const size_t tab = line.find('\t');
    const std::string payload = line.substr(tab + 1);
    const std::string json = nlohmann::json({{"q", payload}}).dump();
    const std::string json_msg = nlohmann::json({{"type", "chat"}, {"text", payload}}).dump();
    Owned cookie = browser("/");
    cookie.headers.emplace_back("Cookie", "sid=" + urlEncode(payload));
    const std::pair<const char*, WafVerdict> http[] = {
        {"query", run(rules, browser("/search?q=" + urlEncode(payload)))},
        {"form", run(rules, withBody("/submit", "application/x-www-form-urlencoded",
                                     "q=" + urlEncode(payload)))},
        {"json", run(rules, withBody("/api", "application/json", json))},
        {"cookie", run(rules, cookie)},
    };
    for (const auto& [where, v] : http) {
      r.http_detect.add(v.intervention);
      if (!v.intervention) {
        r.misses.push_back(std::string("http ") + where + ": " + payload);
      }
    }
    const std::pair<const char*, WafVerdict> ws[] = {
        {"text", evaluateMessage(*handshake.context, payload, WsPayload::kText)},
        {"json", evaluateMessage(*handshake.context, json_msg, WsPayload::kJson)},
    };
    for (const auto& [where, v] : ws) {
      r.ws_detect.add(v.intervention);
      if (!v.intervention) {
        r.misses.push_back(std::string("ws ") + where + ": " + payload);
      }
    }
  }

  for (const std::string& line : lines("benign_http.jsonl")) {
    nlohmann::json j = nlohmann::json::parse(line);
    Owned o;
    o.method = j["method"];
    o.uri = j["uri"];
    for (const auto& h : j["headers"]) {
      o.headers.emplace_back(h[0], h[1]);
    }
    if (j.contains("body")) {
      o.body = j["body"];
      o.headers.emplace_back("Content-Length", std::to_string(o.body.size()));
    }
    WafVerdict v = run(rules, o);
    r.http_fp.add(v.intervention);
    if (v.intervention) {
      std::string ids;
      for (int id : v.ruleIds()) {
        ids += " " + std::to_string(id);
        r.http_fp_rules.push_back(id);
      }
      r.misses.push_back("false positive http: " + j["name"].get<std::string>() + ":" + ids);
    }
  }
  for (const std::string& m : lines("benign_messages.txt")) {
    WafVerdict v = evaluateMessage(*handshake.context, m,
                                   looksLikeJson(m) ? WsPayload::kJson : WsPayload::kText);
    r.ws_fp.add(v.intervention);
    if (v.intervention) {
      std::string ids;
      for (int id : v.ruleIds()) {
        ids += " " + std::to_string(id);
      }
      r.misses.push_back("false positive ws: " + m + ":");
      r.misses.back() += ids;
    }
  }
  return r;
}

TEST(WafCorpus, DetectionAndFalsePositiveRates) {
  for (int pl : {1, 2}) {
    Rates r = measure(pl);
    std::printf(
        "[waf corpus] PL%d  HTTP detection %d/%d (%.0f%%), false positives %d/%d (%.0f%%)  "
        "WebSocket detection %d/%d (%.0f%%), false positives %d/%d (%.0f%%)\n",
        pl, r.http_detect.hit, r.http_detect.total, r.http_detect.percent(), r.http_fp.hit,
        r.http_fp.total, r.http_fp.percent(), r.ws_detect.hit, r.ws_detect.total,
        r.ws_detect.percent(), r.ws_fp.hit, r.ws_fp.total, r.ws_fp.percent());
    for (const std::string& m : r.misses) {
      std::printf("[waf corpus] PL%d   %s\n", pl, m.c_str());
    }
    if (pl == 1) {
      EXPECT_GE(r.http_detect.percent(), 90.0);
      EXPECT_GE(r.ws_detect.percent(), 90.0);
      // The CRS's only HTTP false positives at PL1 here are PUT, PATCH and DELETE: its default
      // tx.allowed_methods is "GET HEAD POST OPTIONS" (rule 911100), for operators to widen.
      for (int id : r.http_fp_rules) {
        EXPECT_TRUE(id == 911100 || id == 949110) << id;
      }
      EXPECT_LE(r.ws_fp.hit, 1);
    }
  }
}

}  // namespace
}  // namespace sluice::filters::waf
