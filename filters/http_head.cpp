#include "filters/http_head.h"

#include <algorithm>
#include <cstring>

namespace sluice::filters {

namespace {
char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

uint64_t load64(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

uint32_t load32(const char* p) {
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// True when eight bytes are equal ignoring ASCII case: a word at a time, where the plain loop
// took a compare and a branch per byte. Words that differ in more than the 0x20 bits (the usual
// mismatch) are refused at once; otherwise each differing byte must be an ASCII letter. With h
// the byte lower-cased to seven bits, h + 0x1F has the high bit set when h >= 'a' and h + 0x05
// when h > 'z'; neither carries into the next byte.
bool iequals8(uint64_t a, uint64_t b) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  uint64_t diff = a ^ b;
  if ((diff & ~(0x20 * kOnes)) != 0) {
    return false;
  }
  uint64_t low = (a | 0x20 * kOnes) & (0x7F * kOnes);
  uint64_t from_a = low + (0x80 - 'a') * kOnes;
  uint64_t past_z = low + (0x7F - 'z') * kOnes;
  uint64_t letters = (from_a ^ past_z) & ~a & (0x80 * kOnes);
  return (diff & ~(letters >> 2)) == 0;
}
}  // namespace

bool iequalsBytes(const char* a, const char* b, size_t n) {
  // Header names are mostly 4 to 30 bytes: whole words, the last one overlapping the one before.
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8) {
      if (!iequals8(load64(a + i), load64(b + i))) {
        return false;
      }
    }
    return iequals8(load64(a + n - 8), load64(b + n - 8));
  }
  if (n >= 4) {
    uint64_t wa = (uint64_t{load32(a)} << 32) | load32(a + n - 4);
    uint64_t wb = (uint64_t{load32(b)} << 32) | load32(b + n - 4);
    return iequals8(wa, wb);
  }
  for (size_t i = 0; i < n; ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

const Header* HeaderFields::find(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) {
      return &h;
    }
  }
  return nullptr;
}

std::optional<std::string_view> HeaderFields::get(std::string_view name) const {
  const Header* h = find(name);
  if (h == nullptr) {
    return std::nullopt;
  }
  return std::string_view(h->value);
}

size_t HeaderFields::count(std::string_view name) const {
  size_t n = 0;
  for (const Header& h : headers) {
    n += iequals(h.name, name) ? 1 : 0;
  }
  return n;
}

void HeaderFields::add(std::string_view name, std::string_view value) {
  headers.push_back({std::string(name), std::string(value)});
}

void HeaderFields::set(std::string_view name, std::string_view value) {
  bool done = false;
  std::erase_if(headers, [&](Header& h) {
    if (!iequals(h.name, name)) {
      return false;
    }
    if (done) {
      return true;
    }
    h.value.assign(value);
    done = true;
    return false;
  });
  if (!done) {
    add(name, value);
  }
}

size_t HeaderFields::remove(std::string_view name) {
  return std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
}

void RequestHead::clear() {
  method.clear();
  url.clear();
  headers.clear();
  major = minor = 1;
}

void ResponseHead::clear() {
  status = 0;
  reason.clear();
  headers.clear();
  major = minor = 1;
}

}  // namespace sluice::filters
