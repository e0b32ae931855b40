#pragma once

// A cache of verified tokens for one worker (single-threaded: no locks), so that a client that
// reconnects with the same token costs a hash and a lookup instead of a signature check.
// Bounded to `capacity` entries with LRU eviction, keyed by the SHA-256 of the token (the token
// itself is not kept), storing the verified claims. An entry dies at its expiry (exp + leeway,
// decided by the Verifier) and every entry dies when the key set changes generation. Only
// accepted tokens are stored, so a flood of bad tokens cannot push good ones out.
//
// Memory: an entry holds its claims (at most a token's size, 16 KiB by default) plus about 150
// bytes; capacity x typical token size is the figure to budget.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace sluice::filters::jwt {

class Claims;

class VerificationCache {
 public:
  using Digest = std::array<uint8_t, 32>;

  explicit VerificationCache(size_t capacity);

  // SHA-256 of the token; nullopt only if libcrypto fails (then do not use the cache).
  static std::optional<Digest> digest(std::string_view token);

  // The claims stored for `digest`, if the entry exists, belongs to `generation` and has not
  // expired at `now`. A different generation than the cache's clears the whole cache first.
  std::shared_ptr<const Claims> lookup(const Digest& digest, uint64_t generation, int64_t now);

  // Stores (or replaces) an entry valid while now < expires_at, evicting the least recently
  // used one when full. Nothing is stored when capacity is 0 or expires_at has passed.
  void insert(const Digest& digest, uint64_t generation, int64_t expires_at, int64_t now,
              std::shared_ptr<const Claims> claims);

  void clear();
  size_t size() const { return map_.size(); }
  size_t capacity() const { return capacity_; }

  // For metrics.
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  uint64_t evictions() const { return evictions_; }

 private:
  struct DigestHash {
    size_t operator()(const Digest& d) const {
      size_t h;  // the digest is already uniform: its first bytes are a fine hash
      std::memcpy(&h, d.data(), sizeof h);
      return h;
    }
  };
  struct Entry {
    Digest digest;
    int64_t expires_at;
    std::shared_ptr<const Claims> claims;
  };
  using List = std::list<Entry>;  // most recently used first

  void setGeneration(uint64_t generation);

  size_t capacity_;
  uint64_t generation_ = 0;
  List lru_;
  std::unordered_map<Digest, List::iterator, DigestHash> map_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace sluice::filters::jwt
