#pragma once

// The request-target as routes, filters, logs and the backend see it: its form (RFC 9112 3.2),
// the host it names, and its path normalised the way RFC 3986 defines equivalence (unreserved
// characters decoded, escapes in upper case, dot segments removed), so that `/ws/../admin`
// cannot pass a prefix route or filter written for `/admin` and reach a backend that resolves
// the dots itself. Like Envoy's normalize_path and merge_slashes. Pure code: no I/O, no config.

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::http {

// What to do with a separator a client hid from plain prefix matching: "%2F", and "\" or
// "%5C" (which some servers and every browser treat as "/").
enum class SlashAction : uint8_t {
  kReject,  // 400
  kKeep,    // left as sent ("%2f" becomes "%2F"): data, not a separator
  kDecode,  // turned into "/" before dot segments are removed
};

struct PathPolicy {
  bool merge_slashes = false;  // "//" becomes "/"
  SlashAction encoded_slash = SlashAction::kKeep;
  SlashAction backslash = SlashAction::kKeep;
};

enum class TargetForm : uint8_t { kOrigin, kAbsolute, kAuthority, kAsterisk };

struct NormalizedTarget {
  TargetForm form = TargetForm::kOrigin;
  // Starts with "/" for the origin and absolute forms; "*" for the asterisk form; empty for
  // the authority form.
  std::string path;
  // "?" and the query byte for byte as received, or empty when the target has no "?".
  std::string query;
  // The host and optional port, lower-cased: an absolute-form target's authority (which
  // replaces the Host header, RFC 9112 3.2.2), else the Host header's value (maybe empty).
  std::string host;
  // "http" or "https" for the absolute form, else empty.
  std::string scheme;
  // The request-target as received, for a route that forwards it unchanged.
  std::string original;
};

struct TargetResult {
  uint16_t status = 0;  // 0, or the status to answer (400)
  const char* reason = "";
  NormalizedTarget target;

  bool ok() const { return status == 0; }
};

// `target` is the request-target, `host` the Host header's value (empty when there is none).
// An asterisk-form target is valid for OPTIONS only, an authority-form one for CONNECT only.
// A ".." above the root is dropped, as RFC 3986 5.2.4 says: "/../etc" is "/etc".
TargetResult normalizeTarget(std::string_view method, std::string_view target,
                             std::string_view host, const PathPolicy& policy);

// Just the path part: `path` must start with "/" and hold no "?" or "#". On success returns 0
// and sets `*out`; else returns 400 and sets `*reason`.
uint16_t normalizePath(std::string_view path, const PathPolicy& policy, std::string* out,
                       const char** reason);

}  // namespace sluice::http
