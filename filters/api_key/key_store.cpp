#include "filters/api_key/key_store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace sluice::filters::api_key {

namespace {

constexpr size_t kMaxNameBytes = 64;

std::optional<KeyStore::Hash> sha256(std::string_view data) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  KeyStore::Hash h{};
  unsigned int len = 0;
  if (md == nullptr || EVP_Digest(data.data(), data.size(), h.data(), &len, md, nullptr) != 1 ||
      len != h.size()) {
    return std::nullopt;
  }
  return h;
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

bool parseHash(std::string_view hex, KeyStore::Hash& out) {
  if (hex.size() != 64) {
    return false;
  }
  for (size_t i = 0; i < 32; ++i) {
    int hi = hexValue(hex[2 * i]);
    int lo = hexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool validName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return false;
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

KeyStoreResult KeyStore::parse(std::string_view text, std::string_view file) {
  KeyStoreResult result;
  KeyStore store;
  // The SHA-256 of the empty string: a presented empty key must never match.
  const std::optional<Hash> empty_hash = sha256("");
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty() || line.front() == '#') {
      continue;
    }
    auto fail = [&](const std::string& why) {
      result.errors.push_back(std::string(file) + ":" + std::to_string(line_no) + ": " + why);
    };
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      fail("expected `name: sha256-hex`");
      continue;
    }
    std::string_view name = trim(line.substr(0, colon));
    std::string_view hex = trim(line.substr(colon + 1));
    if (!validName(name)) {
      fail("key name must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
      continue;
    }
    Hash hash{};
    if (!parseHash(hex, hash)) {
      fail("key \"" + std::string(name) +
           "\": expected a SHA-256 as 64 hex digits (the key itself must not be stored)");
      continue;
    }
    if (empty_hash && hash == *empty_hash) {
      fail("key \"" + std::string(name) + "\": that is the hash of an empty key");
      continue;
    }
    bool duplicate = false;
    for (const Entry& e : store.entries_) {
      if (e.name == name) {
        fail("key name \"" + std::string(name) + "\" appears twice");
        duplicate = true;
        break;
      }
      if (e.hash == hash) {
        fail("key \"" + std::string(name) + "\" has the same hash as \"" + e.name + "\"");
        duplicate = true;
        break;
      }
    }
    if (!duplicate) {
      store.entries_.push_back({std::string(name), hash});
    }
  }
  if (result.errors.empty()) {
    result.store = std::move(store);
  }
  return result;
}

std::optional<std::string_view> KeyStore::lookup(std::string_view presented) const {
  if (presented.empty() || entries_.empty()) {
    return std::nullopt;
  }
  std::optional<Hash> h = sha256(presented);
  if (!h) {
    return std::nullopt;
  }
  // Every entry is compared, whatever matched before; `found` is 1 + the index of the match,
  // selected with a mask so that no branch depends on which entry it was. Hashes are unique
  // (parse() refuses duplicates), so at most one entry matches.
  size_t found = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    size_t equal = static_cast<size_t>(CRYPTO_memcmp(h->data(), entries_[i].hash.data(), 32) == 0);
    found |= (i + 1) & (0 - equal);
  }
  if (found == 0) {
    return std::nullopt;
  }
  return std::string_view(entries_[found - 1].name);
}

std::string KeyStore::hashHex(std::string_view key) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::optional<Hash> h = sha256(key);
  if (!h) {
    return {};
  }
  std::string out;
  out.reserve(64);
  for (uint8_t b : *h) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

}  // namespace sluice::filters::api_key
