#pragma once

// TLS contexts, built once per config snapshot (so reloads pick up new certificates), and the
// per-connection TLS state that Stream drives over memory BIOs.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "conf/config.h"

namespace sluice::net {

// The server side of a listener: one SSL_CTX per certificate; SNI picks among them by the names
// in each certificate's SANs (exact, then "*.suffix"); the first is the default.
class ServerTls {
 public:
  // Loads and checks every certificate (readable, key matches, not expired) and builds the
  // contexts. On failure returns null and appends diagnostics.
  static std::shared_ptr<ServerTls> build(const conf::ListenerTls& config,
                                          conf::Diagnostics* diagnostics);
  ~ServerTls();

  SSL* newSession() const;
  bool requiresClientCert() const { return verify_ == "require"; }

  // Each certificate's name (its first SAN DNS name, else its subject's CN, else the file) and
  // the end of its validity (Unix time), for the expiry metric.
  struct Expiry {
    std::string name;
    int64_t not_after = 0;
  };
  std::vector<Expiry> expiries() const;

 private:
  struct Cert {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;  // lower-case SAN DNS names ("*.example.com" kept as is)
    std::string file;
  };
  static int onServerName(SSL* ssl, int* alert, void* arg);
  static int onAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                    const unsigned char* in, unsigned int inlen, void* arg);
  SSL_CTX* forName(const std::string& name) const;

  std::vector<Cert> certs_;
  std::string alpn_wire_;  // length-prefixed protocol names
  std::string verify_;
};

// The client side toward a pool's backends.
class ClientTls {
 public:
  static std::shared_ptr<ClientTls> build(const conf::PoolTls& config,
                                          conf::Diagnostics* diagnostics);
  ~ClientTls();
  // `host` is the backend's host, used for SNI and verification unless `sni` is configured.
  SSL* newSession(const std::string& host) const;
  // Keeps `session` (owned) so that the next connection to `host` resumes it.
  void saveSession(const std::string& host, SSL_SESSION* session) const;

 private:
  static int onNewSession(SSL* ssl, SSL_SESSION* session);

 public:
 private:
  SSL_CTX* ctx_ = nullptr;
  mutable std::mutex mutex_;  // guards sessions_ (touched once per new upstream connection)
  mutable std::map<std::string, SSL_SESSION*> sessions_;
  std::string sni_;
  bool verify_ = true;
};

// What a failed handshake is counted as in sluice_tls_handshakes_total{result}.
const char* tlsFailureReason(SSL* ssl, unsigned long err);

}  // namespace sluice::net
