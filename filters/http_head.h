#pragma once

// HTTP/1.x message heads as values: what a codec parses, what filters read and change, what the
// proxy writes on the other side. Pure types (no I/O), shared by proxy/ and filters/.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::filters {

// ASCII case-insensitive equality of `n` bytes.
bool iequalsBytes(const char* a, const char* b, size_t n);
// Whether two bytes may be equal ignoring case: equal, or different in the 0x20 bit alone.
inline bool mayIequal(char a, char b) {
  return ((static_cast<unsigned char>(a) ^ static_cast<unsigned char>(b)) & ~0x20) == 0;
}
// Inline, so that the common mismatches cost no call: header rewriting compares every header
// name against a dozen known ones. Most differ in length; names of one length mostly differ in
// their last byte (families share their first ones: "sec-websocket-", "x-forwarded-").
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && (a.empty() || mayIequal(a.back(), b.back())) &&
         iequalsBytes(a.data(), b.data(), a.size());
}

struct Header {
  std::string name;
  std::string value;
};

// The header lines of a head, in order, as received (names keep their case). Lookups ignore case.
struct HeaderFields {
  std::vector<Header> headers;

  const Header* find(std::string_view name) const;
  std::optional<std::string_view> get(std::string_view name) const;
  size_t count(std::string_view name) const;
  // Appends a line.
  void add(std::string_view name, std::string_view value);
  // Replaces every line of that name with one (appended when there was none).
  void set(std::string_view name, std::string_view value);
  // Removes every line of that name; returns how many there were.
  size_t remove(std::string_view name);
};

struct RequestHead : HeaderFields {
  std::string method;
  std::string url;  // request-target as received
  uint8_t major = 1;
  uint8_t minor = 1;

  void clear();
};

struct ResponseHead : HeaderFields {
  uint16_t status = 0;
  std::string reason;
  uint8_t major = 1;
  uint8_t minor = 1;

  void clear();
};

}  // namespace sluice::filters
