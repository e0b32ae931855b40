#pragma once

// The engine of the `api_key` filter: a set of API keys read from a file of `name: sha256-hex`
// lines, so that no key is stored in plaintext, and a lookup that hashes a presented key and
// compares it with every entry in constant time. Pure code: the caller reads the file.
//
//   # comment lines and blank lines are ignored
//   billing-service: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// A hash is `printf %s "$KEY" | sha256sum`. Names are 1 to 64 characters of [A-Za-z0-9._-]
// (they are forwarded to backends in a header); names and hashes must be unique.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::filters::api_key {

struct KeyStoreResult;

class KeyStore {
 public:
  using Hash = std::array<uint8_t, 32>;

  // Parses the text of a keys file; `file` names it in errors. All errors are reported, not
  // only the first. An empty file gives an empty store (which matches nothing).
  static KeyStoreResult parse(std::string_view text, std::string_view file);

  // The name of the key whose hash is SHA-256(presented), if any. Takes the same time whichever
  // entry matches, or none: the presented key is hashed once, then compared with every entry
  // with CRYPTO_memcmp (constant time over the 32 bytes) without stopping at a match, and the
  // match is recorded with arithmetic, not a branch.
  std::optional<std::string_view> lookup(std::string_view presented) const;

  size_t size() const { return entries_.size(); }

  // SHA-256 of `key` as 64 lowercase hex digits, as the keys file wants it.
  static std::string hashHex(std::string_view key);

 private:
  struct Entry {
    std::string name;
    Hash hash;
  };
  std::vector<Entry> entries_;
};

struct KeyStoreResult {
  std::optional<KeyStore> store;    // set when the file had no error
  std::vector<std::string> errors;  // "file:line: why", every one found
  bool ok() const { return store.has_value(); }
};

}  // namespace sluice::filters::api_key
