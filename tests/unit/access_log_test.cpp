// The access log: JSON and text lines, escaping, batches of several workers merged in time
// order, reopening after a rename, and LogFile's one-object-per-destination.

#include "proxy/access_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sluice {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "sluice-log-XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::vector<std::string> lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    out.push_back(line);
  }
  return out;
}

AccessLogEntry entry(std::string_view path) {
  AccessLogEntry e;
  e.listener = "public";
  e.route = "api";
  e.client = "192.0.2.1";
  e.method = "GET";
  e.path = path;
  e.host = "example.com";
  e.status = 200;
  e.bytes_out = 12;
  e.request_id = "abc";
  return e;
}

TEST(AccessLog, JsonLineWithTheNewFields) {
  TempDir dir;
  std::string error;
  AccessLog log(1);
  ASSERT_TRUE(log.configure(dir.file("a.log"), "json", &error)) << error;
  AccessLogEntry e = entry("/q\"\n");
  e.user_agent = "curl/8";
  e.referer = "https://r/";
  e.tls_version = "TLSv1.3";
  e.tls_cipher = "TLS_AES_128_GCM_SHA256";
  e.upstream_connect_ms = 1.5;
  e.upstream_response_ms = 2.25;
  log.append(0, e);
  e = entry("/ws");
  e.status = 101;
  e.ws_close_code = 1012;
  e.ws_closed_by = "sluice";
  e.ws_close_reason = "backend draining; please reconnect";
  e.ws_close_cause = "drain";
  log.append(0, e);
  log.stop();
  std::vector<std::string> out = lines(dir.file("a.log"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].find(R"("path":"/q\"\u000a")"), std::string::npos) << out[0];
  EXPECT_NE(out[0].find(R"("user_agent":"curl/8","referer":"https://r/")"), std::string::npos);
  EXPECT_NE(out[0].find(R"("tls_version":"TLSv1.3","tls_cipher":"TLS_AES_128_GCM_SHA256")"),
            std::string::npos);
  EXPECT_NE(out[0].find(R"("upstream_connect_ms":1.500,"upstream_response_ms":2.250)"),
            std::string::npos);
  EXPECT_NE(out[1].find(R"("ws_close_code":1012,"ws_closed_by":"sluice",)"
                        R"("ws_close_reason":"backend draining; please reconnect",)"
                        R"("ws_close_cause":"drain")"),
            std::string::npos)
      << out[1];
  EXPECT_EQ(out[1].find("upstream_connect_ms"), std::string::npos);
}

TEST(AccessLog, TextLineIsACombinedLogLine) {
  TempDir dir;
  std::string error;
  AccessLog log(1);
  ASSERT_TRUE(log.configure(dir.file("a.log"), "text", &error)) << error;
  AccessLogEntry e = entry("/a b\"c");
  e.user_agent = "Mozilla \"5\"";
  log.append(0, e);
  log.stop();
  std::vector<std::string> out = lines(dir.file("a.log"));
  ASSERT_EQ(out.size(), 1u);
  static const std::regex kCombined(
      R"re(^192\.0\.2\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /a b\\"c HTTP/1\.1" 200 12 "-" "Mozilla \\"5\\"" request_id=abc listener=public route=api host=example\.com upstream=- duration_ms=0\.000 bytes_in=0$)re");
  EXPECT_TRUE(std::regex_match(out[0], kCombined)) << out[0];
}

TEST(AccessLog, ShardsAreMergedInTimeOrder) {
  TempDir dir;
  std::string error;
  AccessLog log(4);
  ASSERT_TRUE(log.configure(dir.file("a.log"), "json", &error)) << error;
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < 4; ++w) {
    workers.emplace_back([&log, w] {
      for (int i = 0; i < 3000; ++i) {
        std::string path = "/" + std::to_string(w) + "/" + std::to_string(i);
        log.append(w, entry(path));
      }
    });
  }
  for (std::thread& t : workers) {
    t.join();
  }
  log.stop();
  std::vector<std::string> out = lines(dir.file("a.log"));
  ASSERT_EQ(out.size(), 12000u);
  std::string previous;
  for (const std::string& l : out) {
    std::string time = l.substr(9, 24);
    EXPECT_LE(previous, time) << l;
    previous = time;
  }
}

TEST(AccessLog, ReopenWritesToTheFileOfTheConfiguredName) {
  TempDir dir;
  std::string error;
  AccessLog log(1);
  ASSERT_TRUE(log.configure(dir.file("a.log"), "json", &error)) << error;
  log.append(0, entry("/before"));
  log.stop();  // (writes the batch; configure and reopen work after stop too)
  fs::rename(dir.file("a.log"), dir.file("a.log.1"));
  ASSERT_TRUE(log.reopen(&error)) << error;
  log.append(0, entry("/after"));
  log.stop();
  std::vector<std::string> old_lines = lines(dir.file("a.log.1"));
  std::vector<std::string> new_lines = lines(dir.file("a.log"));
  ASSERT_EQ(old_lines.size(), 1u);
  ASSERT_EQ(new_lines.size(), 1u);
  EXPECT_NE(old_lines[0].find("/before"), std::string::npos);
  EXPECT_NE(new_lines[0].find("/after"), std::string::npos);
}

TEST(AccessLog, OffAndUnwritable) {
  std::string error;
  AccessLog log(1);
  ASSERT_TRUE(log.configure("off", "json", &error));
  EXPECT_FALSE(log.enabled());
  log.append(0, entry("/nowhere"));
  EXPECT_FALSE(log.configure("/nonexistent-dir/a.log", "json", &error));
  EXPECT_NE(error.find("cannot open '/nonexistent-dir/a.log'"), std::string::npos) << error;
  EXPECT_FALSE(log.enabled()) << "a failed configure keeps what was there";
}

TEST(LogFile, OneObjectPerDestination) {
  TempDir dir;
  std::string error;
  std::shared_ptr<log::LogFile> a = log::LogFile::open(dir.file("x.log"), &error);
  std::shared_ptr<log::LogFile> b = log::LogFile::open(dir.file("x.log"), &error);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(a->isPath());
  EXPECT_FALSE(log::LogFile::open("stderr", &error)->isPath());
  a->write("one\n");
  EXPECT_EQ(lines(dir.file("x.log")), std::vector<std::string>{"one"});
}

}  // namespace
}  // namespace sluice
