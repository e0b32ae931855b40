#pragma once

// What the benchmark backend and load generator share: a growable byte buffer, header token
// helpers, SHA-1 for the WebSocket accept key, and word-at-a-time masking. Standalone on purpose
// (nothing from proxy/), so that the tools measure sluice, nginx and haproxy alike.

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace bench {

struct Buf {
  char* d = nullptr;
  size_t len = 0, cap = 0;
  void reserve(size_t n) {
    if (n <= cap)
      return;
    size_t c = cap ? cap : 256;
    while (c < n)
      c *= 2;
    char* nd = static_cast<char*>(realloc(d, c));
    if (!nd)
      abort();
    d = nd;
    cap = c;
  }
  char* extend(size_t n) {
    reserve(len + n);
    char* r = d + len;
    len += n;
    return r;
  }
  void append(const void* p, size_t n) {
    if (n)
      memcpy(extend(n), p, n);
  }
  void append(const char* s) { append(s, strlen(s)); }
  void consume_front(size_t n) {
    if (n >= len) {
      len = 0;
      return;
    }
    memmove(d, d + n, len - n);
    len -= n;
  }
  void release() {
    free(d);
    d = nullptr;
    len = cap = 0;
  }
};

inline bool ieq(const char* a, size_t n, const char* lit) {
  size_t m = strlen(lit);
  if (n != m)
    return false;
  for (size_t i = 0; i < n; i++) {
    char x = a[i];
    if (x >= 'A' && x <= 'Z')
      x = char(x - 'A' + 'a');
    if (x != lit[i])
      return false;
  }
  return true;
}

// Does the comma-separated header value contain the token (case-insensitive)?
inline bool has_token(const char* v, size_t n, const char* tok) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e > s && ieq(v + s, e - s, tok))
      return true;
  }
  return false;
}

inline const char* find_crlfcrlf(const char* p, size_t n) {
  if (n < 4)
    return nullptr;
  const char* end = p + n;
  const char* s = p;
  while (s + 4 <= end) {
    const char* r = static_cast<const char*>(memchr(s, '\r', size_t(end - s)));
    if (!r || r + 4 > end)
      return nullptr;
    if (r[1] == '\n' && r[2] == '\r' && r[3] == '\n')
      return r;
    s = r + 1;
  }
  return nullptr;
}

// SHA-1 through OpenSSL with the digest fetched once and a context reused per thread, so a
// handshake allocates nothing.
inline void sha1(const void* p, size_t n, unsigned char out[SHA_DIGEST_LENGTH]) {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  thread_local EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  if (!md || !ctx || EVP_DigestInit_ex2(ctx, md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx, p, n) != 1 || EVP_DigestFinal_ex(ctx, out, &len) != 1 ||
      len != SHA_DIGEST_LENGTH) {
    fprintf(stderr, "SHA-1 failed\n");
    abort();
  }
}

// dst[i] = src[i] ^ mask[(off + i) % 4], eight bytes at a time.
inline void unmask_copy(char* dst, const char* src, size_t n, const uint8_t mask[4], uint64_t off) {
  uint8_t m[8];
  for (int k = 0; k < 8; k++)
    m[k] = mask[(off + k) & 3];
  uint64_t m64;
  memcpy(&m64, m, 8);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t a, b, c, d;
    memcpy(&a, src + i, 8);
    memcpy(&b, src + i + 8, 8);
    memcpy(&c, src + i + 16, 8);
    memcpy(&d, src + i + 24, 8);
    a ^= m64, b ^= m64, c ^= m64, d ^= m64;
    memcpy(dst + i, &a, 8);
    memcpy(dst + i + 8, &b, 8);
    memcpy(dst + i + 16, &c, 8);
    memcpy(dst + i + 24, &d, 8);
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t a;
    memcpy(&a, src + i, 8);
    a ^= m64;
    memcpy(dst + i, &a, 8);
  }
  for (; i < n; i++)
    dst[i] = char(uint8_t(src[i]) ^ m[i & 7]);
}

}  // namespace bench
