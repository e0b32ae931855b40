#include "filters/jwt/cache.h"

#include <openssl/evp.h>

namespace sluice::filters::jwt {

VerificationCache::VerificationCache(size_t capacity) : capacity_(capacity) {
  map_.reserve(capacity);
}

std::optional<VerificationCache::Digest> VerificationCache::digest(std::string_view token) {
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  Digest d{};
  unsigned int len = 0;
  if (sha256 == nullptr ||
      EVP_Digest(token.data(), token.size(), d.data(), &len, sha256, nullptr) != 1 ||
      len != d.size()) {
    return std::nullopt;
  }
  return d;
}

void VerificationCache::setGeneration(uint64_t generation) {
  if (generation != generation_) {
    clear();
    generation_ = generation;
  }
}

void VerificationCache::clear() {
  map_.clear();
  lru_.clear();
}

std::shared_ptr<const Claims> VerificationCache::lookup(const Digest& digest, uint64_t generation,
                                                        int64_t now) {
  setGeneration(generation);
  auto it = map_.find(digest);
  if (it == map_.end()) {
    ++misses_;
    return nullptr;
  }
  if (now >= it->second->expires_at) {
    lru_.erase(it->second);
    map_.erase(it);
    ++misses_;
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  ++hits_;
  return it->second->claims;
}

void VerificationCache::insert(const Digest& digest, uint64_t generation, int64_t expires_at,
                               int64_t now, std::shared_ptr<const Claims> claims) {
  setGeneration(generation);
  if (capacity_ == 0 || now >= expires_at || claims == nullptr) {
    return;
  }
  if (auto it = map_.find(digest); it != map_.end()) {
    it->second->expires_at = expires_at;
    it->second->claims = std::move(claims);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back().digest);
    lru_.pop_back();
    ++evictions_;
  }
  lru_.push_front({digest, expires_at, std::move(claims)});
  map_.emplace(digest, lru_.begin());
}

}  // namespace sluice::filters::jwt
