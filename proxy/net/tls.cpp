#include "proxy/net/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <ctime>

namespace sluice::net {

namespace {

std::string opensslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) {
    return "unknown error";
  }
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string lower(std::string s) {
  for (char& c : s) {
    c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

// Modern defaults: TLS 1.2 with forward-secret AEAD suites only; TLS 1.3 keeps OpenSSL's.
constexpr const char* kCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kGroups = "X25519:P-256:P-384";

SSL_CTX* baseContext(const SSL_METHOD* method, int min_version) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) {
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_cipher_list(ctx, kCiphers12);
  SSL_CTX_set1_groups_list(ctx, kGroups);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
  // Idle connections give their read/write buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

// Reads a certificate chain and key into `ctx`, checking that they match and that the leaf is
// within its validity period. Returns an empty string or why not.
std::string loadPair(SSL_CTX* ctx, const std::string& cert, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return "cannot load certificate '" + cert + "': " + opensslError();
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return "cannot load key '" + key + "': " + opensslError();
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return "key '" + key + "' does not match certificate '" + cert + "'";
  }
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
    return "certificate '" + cert + "' has expired";
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
    return "certificate '" + cert + "' is not valid yet";
  }
  return {};
}

std::vector<std::string> dnsNames(X509* cert) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
      if (n->type == GEN_DNS) {
        const unsigned char* data = ASN1_STRING_get0_data(n->d.dNSName);
        names.push_back(lower(std::string(reinterpret_cast<const char*>(data),
                                          static_cast<size_t>(ASN1_STRING_length(n->d.dNSName)))));
      }
    }
    GENERAL_NAMES_free(sans);
  }
  return names;
}

// Per-SSL: the backend host a client session belongs to (freed with the SSL). Per-SSL_CTX: the
// ClientTls that owns the context.
int hostIndex() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<std::string*>(ptr);
      });
  return index;
}
int clientIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

// ---- server --------------------------------------------------------------------------------

std::shared_ptr<ServerTls> ServerTls::build(const conf::ListenerTls& config,
                                            conf::Diagnostics* diagnostics) {
  auto tls = std::shared_ptr<ServerTls>(new ServerTls);
  tls->verify_ = config.verify;
  for (const std::string& p : config.alpn) {
    tls->alpn_wire_.push_back(static_cast<char>(p.size()));
    tls->alpn_wire_ += p;
  }
  int min_version = config.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  bool ok = true;
  for (const conf::TlsCertificate& c : config.certificates) {
    Cert cert;
    cert.ctx = baseContext(TLS_server_method(), min_version);
    if (cert.ctx == nullptr) {
      diagnostics->push_back({c.pos, "cannot create a TLS context: " + opensslError()});
      ok = false;
      continue;
    }
    tls->certs_.push_back(cert);  // owned from here on, freed by ~ServerTls
    std::string why = loadPair(cert.ctx, c.cert, c.key);
    if (!why.empty()) {
      diagnostics->push_back({c.pos.line ? c.pos : config.pos, why});
      ok = false;
      continue;
    }
    tls->certs_.back().names = dnsNames(SSL_CTX_get0_certificate(cert.ctx));
    tls->certs_.back().file = c.cert;
    // Session resumption: a session cache and tickets; OpenSSL renews ticket keys per context,
    // and a reload builds new contexts (new keys).
    static const unsigned char kSid[] = "sluice";
    SSL_CTX_set_session_id_context(cert.ctx, kSid, sizeof kSid - 1);
    SSL_CTX_set_session_cache_mode(cert.ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(cert.ctx, 20000);
    SSL_CTX_set_tlsext_servername_callback(cert.ctx, &ServerTls::onServerName);
    SSL_CTX_set_tlsext_servername_arg(cert.ctx, tls.get());
    if (!tls->alpn_wire_.empty()) {
      SSL_CTX_set_alpn_select_cb(cert.ctx, &ServerTls::onAlpn, tls.get());
    }
    if (!config.client_ca.empty()) {
      if (SSL_CTX_load_verify_locations(cert.ctx, config.client_ca.c_str(), nullptr) != 1) {
        diagnostics->push_back(
            {config.pos, "cannot load client_ca '" + config.client_ca + "': " + opensslError()});
        ok = false;
        continue;
      }
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.client_ca.c_str());
      if (names != nullptr) {
        SSL_CTX_set_client_CA_list(cert.ctx, names);
      }
      int mode = SSL_VERIFY_PEER;
      if (config.verify != "optional") {
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      }
      SSL_CTX_set_verify(cert.ctx, mode, nullptr);
    }
  }
  if (!ok || tls->certs_.empty()) {
    return nullptr;
  }
  return tls;
}

std::vector<ServerTls::Expiry> ServerTls::expiries() const {
  std::vector<Expiry> out;
  for (const Cert& c : certs_) {
    X509* leaf = SSL_CTX_get0_certificate(c.ctx);
    if (leaf == nullptr) {
      continue;
    }
    Expiry e;
    if (!c.names.empty()) {
      e.name = c.names.front();
    } else {
      char cn[256] = {0};
      if (X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn) >
          0) {
        e.name = cn;
      } else {
        e.name = c.file;
      }
    }
    tm t{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &t) == 1) {
      e.not_after = static_cast<int64_t>(timegm(&t));
    }
    out.push_back(std::move(e));
  }
  return out;
}

ServerTls::~ServerTls() {
  for (Cert& c : certs_) {
    SSL_CTX_free(c.ctx);
  }
}

SSL* ServerTls::newSession() const {
  SSL* ssl = SSL_new(certs_.front().ctx);
  if (ssl != nullptr) {
    SSL_set_accept_state(ssl);
  }
  return ssl;
}

SSL_CTX* ServerTls::forName(const std::string& name) const {
  for (const Cert& c : certs_) {
    if (std::find(c.names.begin(), c.names.end(), name) != c.names.end()) {
      return c.ctx;
    }
  }
  size_t dot = name.find('.');
  if (dot != std::string::npos) {
    std::string wildcard = "*" + name.substr(dot);
    for (const Cert& c : certs_) {
      if (std::find(c.names.begin(), c.names.end(), wildcard) != c.names.end()) {
        return c.ctx;
      }
    }
  }
  return nullptr;
}

int ServerTls::onServerName(SSL* ssl, int*, void* arg) {
  const auto* tls = static_cast<const ServerTls*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name != nullptr) {
    if (SSL_CTX* ctx = tls->forName(lower(name))) {
      SSL_set_SSL_CTX(ssl, ctx);
      // SSL_set_SSL_CTX does not carry verification settings over.
      SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), nullptr);
    }
  }
  return SSL_TLSEXT_ERR_OK;  // unknown names get the default certificate
}

int ServerTls::onAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
                      const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* tls = static_cast<const ServerTls*>(arg);
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(
          &selected, outlen, reinterpret_cast<const unsigned char*>(tls->alpn_wire_.data()),
          static_cast<unsigned>(tls->alpn_wire_.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: continue without ALPN
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// ---- client --------------------------------------------------------------------------------

std::shared_ptr<ClientTls> ClientTls::build(const conf::PoolTls& config,
                                            conf::Diagnostics* diagnostics) {
  auto tls = std::shared_ptr<ClientTls>(new ClientTls);
  tls->sni_ = config.sni;
  tls->verify_ = config.verify;
  tls->ctx_ = baseContext(TLS_client_method(), TLS1_2_VERSION);
  if (tls->ctx_ == nullptr) {
    diagnostics->push_back({config.pos, "cannot create a TLS context: " + opensslError()});
    return nullptr;
  }
  // Sessions (TLS 1.2 at the handshake, TLS 1.3 from the tickets that follow it) are kept per
  // backend host and offered on the next connection to it.
  SSL_CTX_set_session_cache_mode(tls->ctx_,
                                 SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_set_ex_data(tls->ctx_, clientIndex(), tls.get());
  SSL_CTX_sess_set_new_cb(tls->ctx_, &ClientTls::onNewSession);
  if (config.verify) {
    int rc = config.ca.empty()
                 ? SSL_CTX_set_default_verify_paths(tls->ctx_)
                 : SSL_CTX_load_verify_locations(tls->ctx_, config.ca.c_str(), nullptr);
    if (rc != 1) {
      diagnostics->push_back({config.pos, "cannot load ca '" + config.ca + "': " + opensslError()});
      return nullptr;
    }
    SSL_CTX_set_verify(tls->ctx_, SSL_VERIFY_PEER, nullptr);
  }
  if (!config.cert.empty()) {
    std::string why = loadPair(tls->ctx_, config.cert, config.key);
    if (!why.empty()) {
      diagnostics->push_back({config.pos, why});
      return nullptr;
    }
  }
  return tls;
}

ClientTls::~ClientTls() {
  for (auto& [host, session] : sessions_) {
    SSL_SESSION_free(session);
  }
  SSL_CTX_free(ctx_);
}

int ClientTls::onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<ClientTls*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), clientIndex()));
  auto* host = static_cast<std::string*>(SSL_get_ex_data(ssl, hostIndex()));
  if (self == nullptr || host == nullptr) {
    return 0;
  }
  self->saveSession(*host, session);
  return 1;  // the reference is ours now
}

void ClientTls::saveSession(const std::string& host, SSL_SESSION* session) const {
  std::lock_guard lock(mutex_);
  SSL_SESSION*& slot = sessions_[host];
  if (slot != nullptr) {
    SSL_SESSION_free(slot);
  }
  slot = session;
}

SSL* ClientTls::newSession(const std::string& host) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) {
    return nullptr;
  }
  SSL_set_ex_data(ssl, hostIndex(), new std::string(host));
  const std::string& name = sni_.empty() ? host : sni_;
  bool is_ip = name.find_first_not_of("0123456789.:") == std::string::npos;
  if (!is_ip) {
    SSL_set_tlsext_host_name(ssl, name.c_str());
  }
  if (verify_) {
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
    } else {
      SSL_set1_host(ssl, name.c_str());
    }
  }
  {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(host);
    if (it != sessions_.end()) {
      SSL_set_session(ssl, it->second);  // resumption across upstream connections
    }
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

const char* tlsFailureReason(SSL* ssl, unsigned long err) {
  if (ssl != nullptr && SSL_get_verify_result(ssl) != X509_V_OK) {
    return "certificate_verify_failed";
  }
  switch (ERR_GET_REASON(err)) {
    case SSL_R_NO_SHARED_CIPHER:
      return "no_shared_cipher";
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return "protocol_version";
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return "http_request";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return "no_client_certificate";
    default:
      return "handshake_failed";
  }
}

}  // namespace sluice::net
