#pragma once

// The rate limiter's table of keys, one per filter for the whole process (every worker's streams
// share it, so a limit is per process, not per worker). Its memory is fixed when it is made,
// whatever the traffic: a flood of new keys (spoofed addresses, random tokens) replaces old
// entries and is counted, but never grows it.
//
// Layout: a set-associative cache. A key's 64-bit hash picks one set of 8 entries; the key lives
// in one of them or nowhere. An entry whose buckets are all full again (every TAT in the past)
// and that holds no connection carries no information: it is free for reuse without counting.
// When a set has no such entry, the least recently used one without connections is replaced,
// and that is an eviction. Each set has its own spin lock held for a few dozen instructions (find
// the entry, do the GCRA arithmetic): two workers only contend when they touch keys of the same
// set at the same moment.
//
// Keys are hashed with SipHash-1-3 under a key drawn at random per process, so that nobody can
// craft keys that collide with someone else's (two keys with one hash would share buckets).

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "filters/ratelimit/gcra.h"

namespace sluice::filters::ratelimit {

// What a key's entry holds: one TAT per rate, and its open connections.
enum Scope : uint8_t {
  kRequests,
  kConnections,
  kMessages,
  kMessageBytes,
  kRateScopes,  // (the rates above have a TAT each)
  kConcurrent = kRateScopes,
  kScopeCount,
};
const char* scopeName(Scope scope);  // the config key: "requests_per_second", ...

// SipHash-1-3 of `data` under the process's random key.
uint64_t hashKey(std::string_view data);

struct BucketTake {
  bool conformed = false;
  bool charged = false;
  int64_t wait_ns = 0;  // until the take would have conformed (0 when it did)
  int64_t tat_before = 0;
  int64_t tat_after = 0;  // equal to tat_before when nothing was charged
};
// One take on one bucket (the table's entries, or a connection's own): charged when it conforms,
// or when it would within `charge_within_ns` (-1: only when it conforms).
BucketTake takeBucket(int64_t& tat, const Gcra& gcra, int64_t now, double cost,
                      int64_t charge_within_ns);

class KeyTable {
 public:
  static constexpr size_t kWays = 8;

  struct Entry {
    uint64_t key;  // hash of the key; 0 = empty
    int64_t tat[kRateScopes];
    int64_t used;         // last use (ns), for least-recently-used replacement
    uint32_t concurrent;  // open connections
    uint32_t pad;
  };

  // Room for at least `max_keys` keys (rounded up to whole sets).
  explicit KeyTable(size_t max_keys);
  ~KeyTable();
  KeyTable(const KeyTable&) = delete;
  KeyTable& operator=(const KeyTable&) = delete;

  size_t capacity() const { return sets_ * kWays; }

  // What an operation did to the table, for the filter's metrics.
  struct Effect {
    bool inserted = false;  // a free slot was used for the first time (the table grew)
    bool evicted = false;   // a live entry was replaced
  };

  // A rate take: does `cost` conform for the key's `scope` bucket at `now`? The bucket is charged
  // when it does, and also when it would within `charge_within_ns` (shaping: what is delayed, or
  // passes anyway, is paid for now; -1: only what conforms).
  using Take = BucketTake;
  static constexpr int64_t kOnlyConforming = -1;
  static constexpr int64_t kAlways = INT64_MAX;
  Take take(uint64_t key, Scope scope, const Gcra& gcra, int64_t now, double cost,
            int64_t charge_within_ns, Effect* effect);

  // Concurrency: one more connection for the key if it has fewer than `limit` (true), or none.
  bool acquire(uint64_t key, uint32_t limit, int64_t now, Effect* effect);
  // One connection of the key ends (at most once per successful acquire). A key whose entry was
  // evicted meanwhile is not found: nothing happens.
  void release(uint64_t key);

  // For tests and metrics: the key's entry (a copy), if present.
  bool find(uint64_t key, Entry* out);

 private:
  struct alignas(64) Set {
    uint32_t lock;  // 0 = free; used through std::atomic_ref
    uint32_t pad;
    Entry entries[kWays];
  };
  class Locked;

  Set& setFor(uint64_t key) const;
  // The key's entry in `set` (locked), made when absent; null when every way holds connections
  // and `need_room` is false.
  Entry* entryFor(Set& set, uint64_t key, int64_t now, Effect* effect);

  Set* sets_array_;  // calloc'd: pages the traffic never reaches are never touched
  size_t sets_;
};

// One table per filter name and size for the process, kept across reloads while any filter of
// that name uses it, so that a reload neither forgets limits nor loses count of connections
// opened under the previous config.
std::shared_ptr<KeyTable> sharedTable(const std::string& name, size_t max_keys);

}  // namespace sluice::filters::ratelimit
