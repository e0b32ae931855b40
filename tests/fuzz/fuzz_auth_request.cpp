// Fuzzes the request side of the `jwt` and `api_key` filters, and the URL parser of sluice's own
// fetches. The first byte picks the mode:
//   0, 1: the rest is a request, "TARGET\nName: value\nName: value...", judged by a jwt filter
//         that reads every source (header, cookie, query, subprotocol), forwards claims and strips
//         tokens; in mode 1 every "@" in the input is replaced by a token the filter accepts, so
//         the allow path runs on fuzzed surroundings;
//   2:    the same request, judged by an api_key filter reading a query parameter;
//   3:    the rest is a fetch URL.
// Nothing may crash or leak, and what goes on must be safe: no header value with CR or LF, no
// token-shaped Sec-WebSocket-Protocol entry, no token parameter's value in the logged target, a
// challenge on one line.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include <openssl/hmac.h>

#include "filters/api_key/api_key_filter.h"
#include "filters/jwt/base64url.h"
#include "filters/jwt/jwt_filter.h"
#include "filters/request_key.h"
#include "proxy/services.h"
#include "tests/unit/support/fakes.h"

namespace {

using namespace sluice;
using namespace sluice::filters;

const std::string kSecret = "fuzzing-secret-of-at-least-32-bytes!";
constexpr int64_t kNow = 1700000000;

conf::FilterConfig config(const std::string& toml) {
  auto table = std::make_shared<toml::table>(toml::parse(toml, std::string_view("/fuzz.toml")));
  conf::FilterConfig c;
  c.name = table->get("name")->as_string()->get();
  c.type = table->get("type")->as_string()->get();
  c.options = table;
  c.pos = {"/fuzz.toml", 1, 1};
  return c;
}

std::string token() {
  std::string input = jwt::encodeBase64Url(R"({"alg":"HS256"})") + "." +
                      jwt::encodeBase64Url(R"({"sub":"alice","role":["a","b"],"exp":1700000600})");
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), kSecret.data(), static_cast<int>(kSecret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + jwt::encodeBase64Url(std::string(reinterpret_cast<char*>(mac), len));
}

struct Fixture {
  std::shared_ptr<jwt::JwtFilter> jwt;
  FilterPtr keys;
  std::string good;
  Fixture() {
    // The secret goes through a JWKS document written to a file (filters read files only).
    std::string dir = (std::filesystem::temp_directory_path() /
                       ("sluice-fuzz-auth-" + std::to_string(::getpid())))
                          .string();
    std::filesystem::create_directories(dir);
    std::string jwks = dir + "/jwks.json";
    FILE* f = fopen(jwks.c_str(), "w");
    fprintf(f, R"({"keys":[{"kty":"oct","k":"%s"}]})", jwt::encodeBase64Url(kSecret).c_str());
    fclose(f);
    std::string keys_file = dir + "/keys";
    f = fopen(keys_file.c_str(), "w");
    fprintf(f, "svc: %s\n", api_key::KeyStore::hashHex("@").c_str());
    fclose(f);
    conf::Diagnostics d;
    jwt = std::dynamic_pointer_cast<jwt::JwtFilter>(buildFilter(
        config("name = \"j\"\ntype = \"jwt\"\njwks_file = \"" + jwks +
               "\"\ntoken_from = [\"header:Authorization\", \"cookie:t\", \"query:t\", "
               "\"subprotocol\"]\nforward_claims = { sub = \"X-Sub\", role = \"X-Role\" }\n"
               "strip_token = true\non_expiry = \"close\"\n"),
        d));
    keys = buildFilter(config("name = \"k\"\ntype = \"api_key\"\nkeys_file = \"" + keys_file +
                              "\"\nkey_from = \"query:k\"\nstrip_key = true\n"),
                       d);
    if (!jwt || !keys) {
      __builtin_trap();
    }
    jwt->setWallClock([] { return kNow * 1000; });
    good = token();
    std::filesystem::remove_all(dir);
  }
};

const Fixture& fixture() {
  static const Fixture* f = new Fixture();
  return *f;
}

RequestHead parseRequest(std::string_view in) {
  RequestHead head;
  head.method = "GET";
  size_t nl = in.find('\n');
  head.url = std::string(in.substr(0, nl));
  in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
  while (!in.empty() && head.headers.size() < 64) {
    nl = in.find('\n');
    std::string_view line = in.substr(0, nl);
    in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string_view value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') {
      value.remove_prefix(1);
    }
    head.add(line.substr(0, colon), value);
  }
  return head;
}

// What goes on (only when the request passed) and what is logged and answered (always).
void checkSafe(const RequestHead& head, const testing::FakeCallbacks& cb, std::string_view param) {
  for (const Header& h : cb.reply_status != 0 ? std::vector<Header>{} : head.headers) {
    if (h.value.find_first_of("\r\n") != std::string::npos &&
        (iequals(h.name, "x-sub") || iequals(h.name, "x-role"))) {
      __builtin_trap();
    }
    if (param == "t" && iequals(h.name, "sec-websocket-protocol")) {  // (jwt's business only)
      size_t start = 0;
      while (start <= h.value.size()) {
        size_t comma = h.value.find(',', start);
        std::string e = h.value.substr(start, comma == std::string::npos ? comma : comma - start);
        e.erase(0, e.find_first_not_of(" \t"));
        e.erase(e.find_last_not_of(" \t") + 1);
        if (jwt::looksLikeJws(e)) {
          __builtin_trap();
        }
        if (comma == std::string::npos) {
          break;
        }
        start = comma + 1;
      }
    }
  }
  // The logged target shows no value of the token's parameter.
  for (std::string_view v : queryValues(cb.log_path, param)) {
    if (v != "REDACTED") {
      __builtin_trap();
    }
  }
  if (cb.reply_headers.find('\n') != cb.reply_headers.size() - 1 && !cb.reply_headers.empty()) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  const Fixture& fx = fixture();
  uint8_t mode = data[0] % 4;
  std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode == 3) {
    std::string why;
    std::optional<FetchUrl> url = parseFetchUrl(in, &why);
    if (url &&
        (url->host.empty() || url->target.empty() || url->target[0] != '/' || url->port == 0)) {
      __builtin_trap();
    }
    if (!url && why.empty()) {
      __builtin_trap();
    }
    return 0;
  }
  if (mode == 1) {
    std::string out;
    for (char c : in) {
      if (c == '@') {
        out += fx.good;
      } else {
        out.push_back(c);
      }
    }
    in.swap(out);
  }
  RequestHead head = parseRequest(in);
  testing::FakeCallbacks cb;
  cb.info_.websocket = true;
  auto stream = (mode == 2 ? fx.keys : FilterPtr(fx.jwt))->create();
  stream->setCallbacks(cb);
  Status st = stream->onRequestHead(head);
  if ((st == Status::kContinue) != (cb.reply_status == 0)) {
    __builtin_trap();
  }
  checkSafe(head, cb, mode == 2 ? "k" : "t");
  stream->onDestroy();
  return 0;
}
