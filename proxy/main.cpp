// sluice: a reverse proxy and WebSocket-aware edge gateway.

#include <brotli/encode.h>
#include <llhttp.h>
#include <modsecurity/modsecurity.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <uv.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "proxy/log.h"
#include "proxy/server.h"

namespace {

// The commit comes from CMake (git's, or -DSLUICE_COMMIT= for a build without .git).
#ifndef SLUICE_COMMIT
#define SLUICE_COMMIT "unknown"
#endif

void usage(FILE* out) {
  fprintf(
      out,
      "usage: sluice --config FILE             run with FILE\n"
      "       sluice --upgrade --config FILE   take the listening sockets over from the sluice\n"
      "                                        running FILE (a binary upgrade), which then drains\n"
      "       sluice --check FILE              check FILE as a start would (ports included)\n"
      "                                        and exit 0 or 1\n"
      "       sluice --version | --help\n"
      "\n"
      "options:\n"
      "  -c, --config FILE      the config file (TOML; see sluice.toml(5))\n"
      "  -t, --check FILE       validate FILE: every error as FILE:LINE:COLUMN, exit 1 on any\n"
      "      --upgrade          binary upgrade: take over the listeners of the running sluice\n"
      "      --log-level LEVEL  debug|info|warn|error (overrides [server] log_level)\n"
      "  -v, --version          version, commit, compiler and library versions\n"
      "  -h, --help             this text\n"
      "\n"
      "signals:\n"
      "  HUP        reload the config, certificates and token files; a config that fails\n"
      "             keeps the running one (also POST /api/reload, and on file changes)\n"
      "  USR1       reopen the access and error log files (logrotate)\n"
      "  TERM, INT  lame duck for [server] drain_delay, then stop accepting and drain for\n"
      "             [server] shutdown_timeout (WebSockets then get 1001); a second one exits\n"
      "             at once\n"
      "  Under systemd (Type=notify) sluice reports READY, RELOADING and STOPPING.\n"
      "\n"
      "admin endpoints ([admin] listen, default 127.0.0.1:9901):\n"
      "  GET  /healthz                                  200 ok, 503 while shutting down\n"
      "  GET  /metrics                                  Prometheus text (read token)\n"
      "  GET  /api/status                               listeners, pools, backends (read token)\n"
      "  GET  /                                         the live status page (a browser)\n"
      "  GET  /api/live                                 WebSocket: /api/status every second (read "
      "token)\n"
      "  POST /api/reload                               reload now (token)\n"
      "  POST /api/pools/POOL/backends/ADDRESS/drain    drain a backend (token)\n"
      "  POST /api/pools/POOL/backends/ADDRESS/undrain  undo it (token)\n"
      "\n"
      "docs: man 8 sluice, man 5 sluice.toml; /usr/share/doc/sluice/ (the docs, and examples/\n"
      "      with full.toml, which sets every key with a comment); the packaged config is\n"
      "      /etc/sluice/sluice.toml\n");
}

std::string brotliVersion(uint32_t v) {
  return std::to_string(v >> 24) + "." + std::to_string((v >> 12) & 0xfff) + "." +
         std::to_string(v & 0xfff);
}

// Runtime versions where a library can say its own (the shared object actually loaded), with
// the headers' version beside them when they differ.
void version() {
  printf("sluice %s (commit %s)\n", SLUICE_VERSION, SLUICE_COMMIT);
#if defined(__clang__)
  printf("compiler: clang %s", __clang_version__);
#elif defined(__GNUC__)
  printf("compiler: gcc %s", __VERSION__);
#else
  printf("compiler: unknown");
#endif
#if defined(__SANITIZE_ADDRESS__)
  printf(" (AddressSanitizer)");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  printf(" (AddressSanitizer)");
#endif
#endif
  printf(", C++ %ld\n", static_cast<long>(__cplusplus));
  auto line = [](const char* name, const std::string& runtime, const std::string& built) {
    if (built.empty() || runtime.find(built) != std::string::npos) {
      printf("  %-15s %s\n", name, runtime.c_str());
    } else {
      printf("  %-15s %s (built with %s)\n", name, runtime.c_str(), built.c_str());
    }
  };
  printf("libraries:\n");
  line("libuv", uv_version_string(),
       std::to_string(UV_VERSION_MAJOR) + "." + std::to_string(UV_VERSION_MINOR) + "." +
           std::to_string(UV_VERSION_PATCH));
  line("OpenSSL", OpenSSL_version(OPENSSL_VERSION), OPENSSL_VERSION_TEXT);
  line("zlib", zlibVersion(), ZLIB_VERSION);
  line("brotli", brotliVersion(BrotliEncoderVersion()), "");
  line("libmodsecurity", modsecurity::ModSecurity().whoAmI(), MODSECURITY_VERSION);
  line("llhttp",
       std::to_string(LLHTTP_VERSION_MAJOR) + "." + std::to_string(LLHTTP_VERSION_MINOR) + "." +
           std::to_string(LLHTTP_VERSION_PATCH) + " (compiled in)",
       "");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config;
  std::string check;
  sluice::Server::Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "sluice: %s needs a value\n", name);
        exit(2);
      }
      return argv[++i];
    };
    if (arg == "--version" || arg == "-v") {
      version();
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else if (arg == "--config" || arg == "-c") {
      config = value("--config");
    } else if (arg == "--check" || arg == "-t") {
      check = value("--check");
    } else if (arg == "--upgrade") {
      options.upgrade = true;
    } else if (arg == "--log-level") {
      std::string level = value("--log-level");
      sluice::log::Level parsed;
      if (!sluice::log::parseLevel(level, &parsed)) {
        fprintf(stderr, "sluice: unknown log level '%s'\n", level.c_str());
        return 2;
      }
      sluice::log::setLevel(parsed);
      options.log_level_set = true;
    } else {
      fprintf(stderr, "sluice: unknown argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (config.empty() == check.empty() || (options.upgrade && config.empty())) {
    usage(stderr);
    return 2;
  }
  if (!check.empty()) {
    return sluice::checkConfig(check);
  }

  sluice::conf::Diagnostics diagnostics;
  sluice::SnapshotPtr snapshot = sluice::loadSnapshot(config, 1, &diagnostics);
  size_t errors = 0;
  for (const sluice::conf::Diagnostic& d : diagnostics) {
    fprintf(stderr, "%s\n", d.format().c_str());
    errors += d.error() ? 1 : 0;
  }
  if (!snapshot) {
    fprintf(stderr, "%s: %zu error%s\n", config.c_str(), errors, errors == 1 ? "" : "s");
    return 1;
  }
  sluice::Server server(snapshot, options);
  return server.run();
}
