#include "filters/ratelimit/key_table.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include <openssl/rand.h>

namespace sluice::filters::ratelimit {

const char* scopeName(Scope scope) {
  switch (scope) {
    case kRequests:
      return "requests_per_second";
    case kConnections:
      return "connections_per_second";
    case kMessages:
      return "messages_per_second";
    case kMessageBytes:
      return "message_bytes_per_second";
    case kConcurrent:
      return "concurrent_connections";
    case kScopeCount:
      break;
  }
  return "?";
}

namespace {

struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
  SipKey() {
    uint64_t k[2] = {0x736f6d6570736575ull, 0x646f72616e646f6dull};
    // RAND_bytes does not fail on a seeded Linux system; the fixed key above is the fallback.
    RAND_bytes(reinterpret_cast<unsigned char*>(k), sizeof k);
    k0 = k[0];
    k1 = k[1];
  }
};

const SipKey& sipKey() {
  static const SipKey key;
  return key;
}

inline uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

inline void sipRound(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1;
  v1 = rotl(v1, 13);
  v1 ^= v0;
  v0 = rotl(v0, 32);
  v2 += v3;
  v3 = rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = rotl(v1, 17);
  v1 ^= v2;
  v2 = rotl(v2, 32);
}

// Maps a 64-bit hash onto [0, n) without a division (Lemire's multiply-shift).
inline size_t fastRange(uint64_t hash, size_t n) {
  return static_cast<size_t>((static_cast<unsigned __int128>(hash) * n) >> 64);
}

bool idle(const KeyTable::Entry& e, int64_t now) {
  if (e.concurrent != 0) {
    return false;
  }
  for (int64_t tat : e.tat) {
    if (tat > now) {
      return false;
    }
  }
  return true;
}

}  // namespace

uint64_t hashKey(std::string_view data) {
  // SipHash-1-3 (one compression round, three finalisation rounds), as Rust's default hasher.
  const SipKey& k = sipKey();
  uint64_t v0 = 0x736f6d6570736575ull ^ k.k0;
  uint64_t v1 = 0x646f72616e646f6dull ^ k.k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k.k0;
  uint64_t v3 = 0x7465646279746573ull ^ k.k1;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  size_t whole = n & ~size_t{7};
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m;
    memcpy(&m, p + i, 8);
    v3 ^= m;
    sipRound(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t last = static_cast<uint64_t>(n) << 56;
  for (size_t i = whole; i < n; ++i) {
    last |= static_cast<uint64_t>(p[i]) << (8 * (i - whole));
  }
  v3 ^= last;
  sipRound(v0, v1, v2, v3);
  v0 ^= last;
  v2 ^= 0xff;
  sipRound(v0, v1, v2, v3);
  sipRound(v0, v1, v2, v3);
  sipRound(v0, v1, v2, v3);
  uint64_t h = v0 ^ v1 ^ v2 ^ v3;
  return h != 0 ? h : 1;  // 0 marks an empty entry
}

BucketTake takeBucket(int64_t& tat, const Gcra& gcra, int64_t now, double cost,
                      int64_t charge_within_ns) {
  BucketTake t;
  t.tat_before = t.tat_after = tat;
  t.conformed = gcra.conforms(tat, now, cost);
  t.wait_ns = t.conformed ? 0 : gcra.waitNs(tat, now, cost);
  if (t.conformed || t.wait_ns <= charge_within_ns) {
    t.charged = true;
    t.tat_after = tat = gcra.take(tat, now, cost);
  }
  return t;
}

// Holds a set's spin lock for the length of a scope.
class KeyTable::Locked {
 public:
  explicit Locked(Set& set) : lock_(set.lock) {
    while (lock_.exchange(1, std::memory_order_acquire) != 0) {
      while (lock_.load(std::memory_order_relaxed) != 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
    }
  }
  ~Locked() {
    lock_.store(0, std::memory_order_release);
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  std::atomic_ref<uint32_t> lock_;
};

KeyTable::KeyTable(size_t max_keys) : sets_((std::max<size_t>(max_keys, 1) + kWays - 1) / kWays) {
  // Zeroed memory is a table of empty entries and free locks; calloc leaves the pages untouched
  // until a key lands in them.
  sets_array_ = static_cast<Set*>(std::calloc(sets_, sizeof(Set)));
  if (sets_array_ == nullptr) {
    throw std::bad_alloc();  // at config load, never on the data path
  }
}

KeyTable::~KeyTable() {
  std::free(sets_array_);
}

KeyTable::Set& KeyTable::setFor(uint64_t key) const {
  return sets_array_[fastRange(key, sets_)];
}

KeyTable::Entry* KeyTable::entryFor(Set& set, uint64_t key, int64_t now, Effect* effect) {
  Entry* free_slot = nullptr;
  Entry* idle_slot = nullptr;
  Entry* oldest = nullptr;       // least recently used without connections
  Entry* oldest_busy = nullptr;  // least recently used of all
  for (Entry& e : set.entries) {
    if (e.key == key) {
      e.used = now;
      return &e;
    }
    if (e.key == 0) {
      free_slot = free_slot != nullptr ? free_slot : &e;
    } else if (idle(e, now)) {
      idle_slot = idle_slot != nullptr ? idle_slot : &e;
    } else {
      if (e.concurrent == 0 && (oldest == nullptr || e.used < oldest->used)) {
        oldest = &e;
      }
      if (oldest_busy == nullptr || e.used < oldest_busy->used) {
        oldest_busy = &e;
      }
    }
  }
  Entry* e = idle_slot;
  if (e == nullptr && free_slot != nullptr) {
    e = free_slot;
    effect->inserted = true;
  }
  if (e == nullptr) {
    // Every way holds live state. Connections are kept counted as long as any way holds none;
    // when all hold connections, the oldest is forgotten (its connections' ends then find
    // nothing to release: the key is briefly under-counted, never over).
    e = oldest != nullptr ? oldest : oldest_busy;
    effect->evicted = true;
  }
  *e = Entry{};
  e->key = key;
  e->used = now;
  return e;
}

KeyTable::Take KeyTable::take(uint64_t key, Scope scope, const Gcra& gcra, int64_t now, double cost,
                              int64_t charge_within_ns, Effect* effect) {
  Set& set = setFor(key);
  Locked lock(set);
  Entry* e = entryFor(set, key, now, effect);
  return takeBucket(e->tat[scope], gcra, now, cost, charge_within_ns);
}

bool KeyTable::acquire(uint64_t key, uint32_t limit, int64_t now, Effect* effect) {
  Set& set = setFor(key);
  Locked lock(set);
  Entry* e = entryFor(set, key, now, effect);
  if (e->concurrent >= limit) {
    return false;
  }
  ++e->concurrent;
  return true;
}

void KeyTable::release(uint64_t key) {
  Set& set = setFor(key);
  Locked lock(set);
  for (Entry& e : set.entries) {
    if (e.key == key) {
      if (e.concurrent > 0) {
        --e.concurrent;
      }
      return;
    }
  }
}

bool KeyTable::find(uint64_t key, Entry* out) {
  Set& set = setFor(key);
  Locked lock(set);
  for (const Entry& e : set.entries) {
    if (e.key == key) {
      *out = e;
      return true;
    }
  }
  return false;
}

std::shared_ptr<KeyTable> sharedTable(const std::string& name, size_t max_keys) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, size_t>, std::weak_ptr<KeyTable>> tables;
  std::lock_guard lock(mutex);
  auto& slot = tables[{name, max_keys}];
  std::shared_ptr<KeyTable> table = slot.lock();
  if (!table) {
    table = std::make_shared<KeyTable>(max_keys);
    slot = table;
  }
  // Forget tables nobody uses any more (filters renamed or resized by reloads).
  std::erase_if(tables, [](const auto& entry) { return entry.second.expired(); });
  return table;
}

}  // namespace sluice::filters::ratelimit
