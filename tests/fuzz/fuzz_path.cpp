// Fuzzes request-target normalisation under every policy and checks its invariants: a
// normalised path starts with "/", holds no dot segment, none of the separators its policy
// removes, is never longer than the input, and normalises to itself.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http/path.h"

namespace {

using namespace sluice::http;

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

bool hasDotSegment(std::string_view p) {
  for (std::string_view seg : {"/./", "/../"}) {
    if (p.find(seg) != std::string_view::npos) {
      return true;
    }
  }
  auto endsWith = [&](std::string_view s) {
    return p.size() >= s.size() && p.substr(p.size() - s.size()) == s;
  };
  return endsWith("/.") || endsWith("/..");
}

SlashAction action(unsigned bits) {
  switch (bits % 3) {
    case 0:
      return SlashAction::kReject;
    case 1:
      return SlashAction::kKeep;
    default:
      return SlashAction::kDecode;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  PathPolicy policy;
  policy.merge_slashes = (data[0] & 1) != 0;
  policy.encoded_slash = action(data[0] >> 1);
  policy.backslash = action(data[0] >> 3);
  static constexpr const char* kMethods[] = {"GET", "OPTIONS", "CONNECT", "POST"};
  const char* method = kMethods[(data[0] >> 5) & 3];
  // The input after the first byte is "target" or "target\nhost".
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t nl = in.find('\n');
  std::string_view target = in.substr(0, nl);
  std::string_view host = nl == std::string_view::npos ? "example.com" : in.substr(nl + 1);

  TargetResult r = normalizeTarget(method, target, host, policy);
  if (!r.ok()) {
    check(r.status == 400 && r.reason != nullptr && r.reason[0] != '\0');
    return 0;
  }
  const NormalizedTarget& t = r.target;
  check(t.original == target);
  if (t.form == TargetForm::kAuthority) {
    check(t.path.empty() && !t.host.empty());
    return 0;
  }
  if (t.form == TargetForm::kAsterisk) {
    check(t.path == "*");
    return 0;
  }
  const std::string& p = t.path;
  check(!p.empty() && p[0] == '/');
  check(!hasDotSegment(p));
  check(p.size() <= target.size() + 1);  // "+ 1": "http://h" becomes "/"
  check(t.query.empty() || t.query[0] == '?');
  check(target.size() >= t.query.size() &&
        target.substr(target.size() - t.query.size()) == t.query);  // byte for byte
  if (policy.merge_slashes) {
    check(p.find("//") == std::string::npos);
  }
  if (policy.encoded_slash != SlashAction::kKeep) {
    check(p.find("%2F") == std::string::npos && p.find("%2f") == std::string::npos);
  }
  if (policy.backslash != SlashAction::kKeep) {
    check(p.find('\\') == std::string::npos && p.find("%5C") == std::string::npos);
  }
  // Idempotent: the normalised path and the whole normalised target normalise to themselves.
  std::string again;
  const char* reason = "";
  check(normalizePath(p, policy, &again, &reason) == 0);
  check(again == p);
  TargetResult r2 = normalizeTarget("GET", p + t.query, t.host, policy);
  check(r2.ok());
  check(r2.target.path == p && r2.target.query == t.query && r2.target.host == t.host);
  return 0;
}
