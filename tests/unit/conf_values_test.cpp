// Value syntax: durations, sizes, addresses, the diagnostic format, and the did-you-mean helper.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "conf/config.h"
#include "conf/text.h"

namespace sluice::conf {
namespace {

using namespace std::chrono_literals;

struct DurationCase {
  std::string text;
  Duration expected;
};

TEST(ConfValues, DurationsParse) {
  const std::vector<DurationCase> cases = {
      {"250ms", 250ms}, {"30s", 30s}, {"5m", 5min}, {"1h", 1h},
      {"1m30s", 90s},   {"0s", 0ms},  {"0ms", 0ms}, {"1h2m3s4ms", 3723004ms},
      {"90s", 90s},     {"24h", 24h}, {"007s", 7s},
  };
  for (const DurationCase& c : cases) {
    std::string why;
    const std::optional<Duration> d = parseDuration(c.text, &why);
    ASSERT_TRUE(d.has_value()) << c.text << ": " << why;
    EXPECT_EQ(d->count(), c.expected.count()) << c.text;
  }
}

struct BadCase {
  std::string text;
  std::string why;
};

TEST(ConfValues, DurationsRejectWithReason) {
  const std::vector<BadCase> cases = {
      {"", "empty duration"},
      {"30", "missing unit after \"30\" (use ms, s, m or h, e.g. \"30s\")"},
      {"30x", "unknown unit \"x\" (use ms, s, m or h)"},
      {"30sec", "unknown unit \"sec\" (use ms, s, m or h)"},
      {"-5s", "durations cannot be negative"},
      {"1.5s", "fractions are not supported; use a smaller unit (\"1500ms\", not \"1.5s\")"},
      {"30s1m", "units must go from largest to smallest, each once (\"1m30s\"), in \"30s1m\""},
      {"1s1s", "units must go from largest to smallest, each once (\"1m30s\"), in \"1s1s\""},
      {"s", "expected a number at \"s\""},
      {"30 s", "expected a unit at \" s\" (use ms, s, m or h)"},
      {" 30s", "expected a number at \" 30s\""},
      {"1m30", "missing unit after \"30\" (use ms, s, m or h, e.g. \"30s\")"},
      {"99999999999999999999s", "too large"},
      {"9999999999999h", "too large"},
      {"9223372036854775808ms", "too large"},
  };
  for (const BadCase& c : cases) {
    std::string why;
    EXPECT_FALSE(parseDuration(c.text, &why).has_value()) << c.text;
    EXPECT_EQ(why, c.why) << c.text;
  }
  EXPECT_FALSE(parseDuration("x").has_value());  // `why` is optional
}

struct SizeCase {
  std::string text;
  uint64_t expected;
};

TEST(ConfValues, SizesParse) {
  const std::vector<SizeCase> cases = {
      {"0", 0},
      {"1024", 1024},
      {"512B", 512},
      {"16KiB", 16ull * 1024},
      {"1MiB", 1024ull * 1024},
      {"2GiB", 2ull << 30},
      {"1TiB", 1ull << 40},
      {"1KB", 1000},
      {"1MB", 1000ull * 1000},
      {"3GB", 3ull * 1000 * 1000 * 1000},
      {"1K", 1024},
      {"1M", 1024ull * 1024},
      {"1G", 1ull << 30},
      {"16k", 16ull * 1024},
      {"16kib", 16ull * 1024},
      {"16777215TiB", 16777215ull << 40},
      {"18446744073709551615", UINT64_MAX},
  };
  for (const SizeCase& c : cases) {
    std::string why;
    const std::optional<uint64_t> size = parseSize(c.text, &why);
    ASSERT_TRUE(size.has_value()) << c.text << ": " << why;
    EXPECT_EQ(*size, c.expected) << c.text;
  }
}

TEST(ConfValues, SizesRejectWithReason) {
  const std::string units = " (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)";
  const std::vector<BadCase> cases = {
      {"", "empty size"},
      {"-1", "sizes cannot be negative"},
      {"-1KiB", "sizes cannot be negative"},
      {"1.5MiB", "fractions are not supported; use a smaller unit (\"1536KiB\")"},
      {"16XB", "unknown unit \"XB\"" + units},
      {"16 KiB", "unknown unit \" KiB\"" + units},
      {"16KiBs", "unknown unit \"KiBs\"" + units},
      {"KiB", "expected a number at \"KiB\""},
      {"18446744073709551616", "too large"},
      {"16777216TiB", "too large"},
      {"17179869184GiB", "too large"},
  };
  for (const BadCase& c : cases) {
    std::string why;
    EXPECT_FALSE(parseSize(c.text, &why).has_value()) << c.text;
    EXPECT_EQ(why, c.why) << c.text;
  }
}

struct AddressCase {
  std::string text;
  std::string host;
  uint16_t port;
  bool ipv6;
};

TEST(ConfValues, AddressesParse) {
  const std::vector<AddressCase> cases = {
      {"127.0.0.1:8080", "127.0.0.1", 8080, false},
      {"0.0.0.0:443", "0.0.0.0", 443, false},
      {"[::1]:8443", "::1", 8443, true},
      {"[::]:80", "::", 80, true},
      {"[0:0:0:0:0:0:0:1]:1", "::1", 1, true},  // canonical host, text as written
      {"[fd00::21]:65535", "fd00::21", 65535, true},
      {"localhost:80", "localhost", 80, false},
      {"Backend-1.Example.com:9001", "backend-1.example.com", 9001, false},
      {"app_1:9001", "app_1", 9001, false},
  };
  for (const AddressCase& c : cases) {
    std::string why;
    const std::optional<Address> a = parseAddress(c.text, &why);
    ASSERT_TRUE(a.has_value()) << c.text << ": " << why;
    EXPECT_EQ(a->host, c.host) << c.text;
    EXPECT_EQ(a->port, c.port) << c.text;
    EXPECT_EQ(a->ipv6, c.ipv6) << c.text;
    EXPECT_EQ(a->text, c.text);
  }
}

TEST(ConfValues, AddressesRejectWithReason) {
  const std::vector<BadCase> cases = {
      {"", "empty address"},
      {"127.0.0.1", "missing port (e.g. \"127.0.0.1:8080\")"},
      {"localhost", "missing port (e.g. \"127.0.0.1:8080\")"},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:0", "port must be between 1 and 65535, got 0"},
      {"127.0.0.1:65536", "port must be between 1 and 65535, got 65536"},
      {"127.0.0.1:123456", "port must be between 1 and 65535, got 123456"},
      {"127.0.0.1:99999999999999999999999",
       "port must be between 1 and 65535, got 99999999999999999999999"},
      {"127.0.0.1:http", "port \"http\" is not a number"},
      {"127.0.0.1:+80", "port \"+80\" is not a number"},
      {"::1:80", "IPv6 addresses need brackets (e.g. \"[::1]:8443\")"},
      {"[::1]", "missing port (e.g. \"[::1]:8443\")"},
      {"[::1]80", "missing port (e.g. \"[::1]:8443\")"},
      {"[::1:80", "missing ']' after the IPv6 address"},
      {"[zz::1]:80", "\"zz::1\" is not a valid IPv6 address"},
      {"[127.0.0.1]:80", "\"127.0.0.1\" is not a valid IPv6 address"},
      {"256.1.1.1:80", "\"256.1.1.1\" is not a valid IPv4 address"},
      {"1.2.3:80", "\"1.2.3\" is not a valid IPv4 address"},
      {":8080", "missing host (use 0.0.0.0 or [::] for every interface)"},
      {"exa mple.com:80", "\"exa mple.com\" is not a valid host name or IP address"},
      {"-bad.com:80", "\"-bad.com\" is not a valid host name or IP address"},
      {"a..b:80", "\"a..b\" is not a valid host name or IP address"},
  };
  for (const BadCase& c : cases) {
    std::string why;
    EXPECT_FALSE(parseAddress(c.text, &why).has_value()) << c.text;
    EXPECT_EQ(why, c.why) << c.text;
  }
}

TEST(ConfValues, DiagnosticFormat) {
  EXPECT_EQ((Diagnostic{{"conf/a.toml", 3, 7}, "boom"}.format()), "conf/a.toml:3:7: error: boom");
  // A file-level problem (the main file cannot be read) has no line.
  EXPECT_EQ((Diagnostic{{"a.toml", 0, 0}, "cannot read"}.format()), "a.toml: error: cannot read");
}

TEST(ConfValues, EditDistanceCountsTranspositionsAsOneEdit) {
  EXPECT_EQ(detail::editDistance("idle_timeout", "idle_timeout"), 0u);
  EXPECT_EQ(detail::editDistance("idel_timeout", "idle_timeout"), 1u);
  EXPECT_EQ(detail::editDistance("workres", "workers"), 1u);
  EXPECT_EQ(detail::editDistance("Workers", "workers"), 0u);
  EXPECT_EQ(detail::editDistance("", "abc"), 3u);
  EXPECT_EQ(detail::editDistance("kitten", "sitting"), 3u);
}

TEST(ConfValues, ClosestMatchSuggestsOnlyLikelyTypos) {
  const std::vector<std::string> keys = {"name",         "listen",           "header_timeout",
                                         "idle_timeout", "max_header_bytes", "tls"};
  EXPECT_EQ(detail::closestMatch("idel_timeout", keys), "idle_timeout");
  EXPECT_EQ(detail::closestMatch("lisen", keys), "listen");
  EXPECT_EQ(detail::closestMatch("max_header", keys), "max_header_bytes");  // prefix
  EXPECT_EQ(detail::closestMatch("tsl", keys), "tls");
  EXPECT_EQ(detail::closestMatch("xyz", keys), std::nullopt);
  EXPECT_EQ(detail::closestMatch("completely_different", keys), std::nullopt);
  EXPECT_EQ(detail::didYouMean("nmae", keys), "; did you mean 'name'?");
  EXPECT_EQ(detail::didYouMean("zzz", keys), "");
}

TEST(ConfValues, QuoteEscapesUntrustedText) {
  EXPECT_EQ(detail::quote("a\"b\n\x01"), "\"a\\\"b\\n\\x01\"");
  EXPECT_EQ(detail::quote(std::string(100, 'x')), "\"" + std::string(64, 'x') + "...\"");
  EXPECT_EQ(detail::quoteName("name"), "'name'");
  EXPECT_EQ(detail::quoteName("a b"), "\"a b\"");
}

}  // namespace
}  // namespace sluice::conf
