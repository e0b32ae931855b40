#include "proxy/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace sluice::privileges {

namespace {

std::optional<unsigned long> numericId(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
      text.size() > 9) {
    return std::nullopt;
  }
  return strtoul(text.c_str(), nullptr, 10);
}

}  // namespace

std::optional<Account> resolveAccount(const std::string& user, const std::string& group,
                                      std::string* error) {
  Account a;
  a.user = user;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (std::optional<unsigned long> id = numericId(user)) {
    getpwuid_r(static_cast<uid_t>(*id), &pw, buf.data(), buf.size(), &found);
    a.uid = static_cast<uid_t>(*id);
    if (found == nullptr && group.empty()) {
      *error = "user id " + user + " has no passwd entry: set 'group' as well";
      return std::nullopt;
    }
  } else {
    int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (found == nullptr) {
      *error = "unknown user '" + user + "'" + (rc != 0 ? std::string(": ") + strerror(rc) : "");
      return std::nullopt;
    }
    a.uid = pw.pw_uid;
  }
  if (found != nullptr) {
    a.gid = pw.pw_gid;
    a.group = std::to_string(pw.pw_gid);
  }
  if (!group.empty()) {
    a.group = group;
    if (std::optional<unsigned long> id = numericId(group)) {
      a.gid = static_cast<gid_t>(*id);
    } else {
      std::vector<char> gbuf(16384);
      struct group gr {};
      struct group* gfound = nullptr;
      int rc = getgrnam_r(group.c_str(), &gr, gbuf.data(), gbuf.size(), &gfound);
      if (gfound == nullptr) {
        *error =
            "unknown group '" + group + "'" + (rc != 0 ? std::string(": ") + strerror(rc) : "");
        return std::nullopt;
      }
      a.gid = gr.gr_gid;
    }
  }
  return a;
}

bool drop(const Account& a, std::string* error) {
  if (getuid() == a.uid && geteuid() == a.uid && getgid() == a.gid && getegid() == a.gid) {
    return true;  // started as that account already
  }
  if (geteuid() != 0) {
    *error = "'user = \"" + a.user + "\"' needs sluice to start as root (it runs as uid " +
             std::to_string(geteuid()) + "); leave 'user' out to run as this user";
    return false;
  }
  // Supplementary groups: the user's own (e.g. ssl-cert, to read private keys), or none.
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  getpwuid_r(a.uid, &pw, buf.data(), buf.size(), &found);
  int rc = found != nullptr ? initgroups(pw.pw_name, a.gid) : setgroups(0, nullptr);
  if (rc != 0) {
    *error = std::string("setgroups: ") + strerror(errno);
    return false;
  }
  if (setgid(a.gid) != 0) {
    *error = "setgid(" + std::to_string(a.gid) + "): " + strerror(errno);
    return false;
  }
  if (setuid(a.uid) != 0) {
    *error = "setuid(" + std::to_string(a.uid) + "): " + strerror(errno);
    return false;
  }
  if (a.uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
    *error = "root privileges could be regained after setuid: refusing to run";
    return false;
  }
  return true;
}

bool readable(const std::string& path) {
  return access(path.c_str(), R_OK) == 0;
}

}  // namespace sluice::privileges
