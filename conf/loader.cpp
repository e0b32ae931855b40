// loadFile / loadString: reads the main file and its includes, parses them, hands the documents to
// the schema, and sorts the diagnostics into file order.

#include <glob.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>
#include <tuple>

#include "conf/config.h"
#include "conf/schema.h"
#include "conf/section.h"
#include "conf/text.h"

namespace sluice::conf {
namespace {

namespace fs = std::filesystem;
using detail::FileContext;

struct Document {
  FileContext file;
  std::shared_ptr<const toml::table> root;
};

// How a file is recognised when it is reached twice (cycles, repeated includes).
std::string identity(const std::string& path) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(path, ec);
  return ec ? fs::path(path).lexically_normal().string() : canonical.string();
}

// toml++ says "Error while parsing table header: encountered end-of-file".
std::string syntaxError(std::string_view description) {
  static constexpr std::string_view kPrefix = "Error while parsing ";
  if (description.substr(0, kPrefix.size()) == kPrefix) {
    return "TOML syntax error in " + std::string(description.substr(kPrefix.size()));
  }
  return "TOML syntax error: " + std::string(description);
}

bool hasGlobMeta(std::string_view pattern) {
  return pattern.find_first_of("*?[") != std::string_view::npos;
}

// `dir` with glob(3) metacharacters escaped, so only the include pattern itself is expanded.
std::string escapeGlob(const std::string& dir) {
  std::string out;
  for (char c : dir) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out;
}

// Reads a file and its includes, depth first: a file's own tables come before its includes'.
class DocumentLoader {
 public:
  explicit DocumentLoader(Diagnostics& diagnostics) : diagnostics_(diagnostics) {}

  // `included_at` is the position of the include pattern that named `path`, if any.
  void loadFile(const std::string& path, const std::optional<SourcePos>& included_at) {
    const std::string id = identity(path);
    const SourcePos at = included_at.value_or(SourcePos{path, 0, 0});
    const auto on_stack = std::find_if(stack_.begin(), stack_.end(),
                                       [&](const auto& entry) { return entry.first == id; });
    if (on_stack != stack_.end()) {
      std::string chain;
      for (auto it = on_stack; it != stack_.end(); ++it) {
        chain += it->second + " -> ";
      }
      error(at, "include cycle: " + chain + path);
      return;
    }
    if (const auto seen = seen_.find(id); seen != seen_.end()) {
      error(at, "file " + detail::quote(path) + " is already included (as " +
                    detail::quote(seen->second) + ")");
      return;
    }
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      error(at, "cannot read " + detail::quote(path) + ": it is a directory");
      failed_ = true;
      return;
    }
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    if (in) {
      text << in.rdbuf();
    }
    if (!in || in.bad()) {
      const int err = errno;
      error(at, "cannot read " + detail::quote(path) + ": " +
                    (err != 0 ? std::strerror(err) : "read error"));
      failed_ = true;
      return;
    }
    loadText(text.str(), path, fs::path(path).parent_path(), id);
  }

  // `name` is the file's name in diagnostics; includes are resolved against `dir`.
  void loadText(std::string_view text, const std::string& name, const fs::path& dir,
                const std::string& id) {
    seen_.emplace(id, name);
    files_.push_back(name);
    std::shared_ptr<toml::table> root;
#if TOML_EXCEPTIONS
    try {
      root = std::make_shared<toml::table>(toml::parse(text, std::string_view(name)));
    } catch (const toml::parse_error& e) {
      error(detail::positionOf(e.source(), name), syntaxError(e.description()));
    }
#else
    toml::parse_result parsed = toml::parse(text, std::string_view(name));
    if (parsed) {
      root = std::make_shared<toml::table>(std::move(parsed).table());
    } else {
      error(detail::positionOf(parsed.error().source(), name),
            syntaxError(parsed.error().description()));
    }
#endif
    if (!root) {
      failed_ = true;
      return;
    }
    documents_.push_back(Document{FileContext{name, dir}, root});
    stack_.emplace_back(id, name);
    loadIncludes(*root, documents_.back().file);
    stack_.pop_back();
  }

  const std::vector<Document>& documents() const {
    return documents_;
  }
  const std::vector<std::string>& files() const {
    return files_;
  }
  // A file could not be read or parsed: what references it would have defined is unknown.
  bool failed() const {
    return failed_;
  }

 private:
  // Copies `file`: loading an include appends to documents_, which may move it.
  void loadIncludes(const toml::table& root, FileContext file) {
    const toml::node* node = root.get("include");
    if (node == nullptr) {
      return;
    }
    const auto pos = [&](const toml::node& n) { return detail::positionOf(n.source(), file.name); };
    // `include = "a.toml"` is taken as `include = ["a.toml"]`.
    const toml::array* array = node->as_array();
    std::vector<const toml::node*> patterns;
    if (array != nullptr) {
      for (const toml::node& element : *array) {
        patterns.push_back(&element);
      }
    } else {
      patterns.push_back(node);
    }
    for (const toml::node* pattern : patterns) {
      const std::optional<std::string_view> text = pattern->value_exact<std::string_view>();
      if (!text) {
        const std::string type(detail::typeName(*pattern));
        error(pos(*pattern),
              array != nullptr
                  ? "'include' entries must be strings, got " + type
                  : "'include' must be an array of file names or patterns, got " + type);
        continue;
      }
      if (text->empty()) {
        error(pos(*pattern), "'include' entries must not be empty");
        continue;
      }
      for (const std::string& path : expand(*text, file.dir, pos(*pattern))) {
        loadFile(path, pos(*pattern));
      }
    }
  }

  // The files an include pattern names, sorted. A pattern without wildcards must exist; one with
  // wildcards may match nothing (an empty conf.d is fine).
  std::vector<std::string> expand(std::string_view pattern, const fs::path& dir,
                                  const SourcePos& at) {
    const fs::path relative(pattern);
    const fs::path joined = relative.is_absolute() ? relative : dir / relative;
    if (!hasGlobMeta(pattern)) {
      std::error_code ec;
      if (!fs::exists(joined, ec)) {
        error(at, "included file " + detail::quote(joined.string()) + " does not exist");
        failed_ = true;
        return {};
      }
      return {joined.lexically_normal().string()};
    }
    std::string full(pattern);
    if (!relative.is_absolute() && !dir.empty()) {
      full = escapeGlob(dir.string()) + "/" + full;
    }
    glob_t matches{};
    const int rc = glob(full.c_str(), GLOB_MARK, nullptr, &matches);
    std::vector<std::string> out;
    if (rc == 0) {
      for (size_t i = 0; i < matches.gl_pathc; ++i) {
        const std::string match = matches.gl_pathv[i];
        if (!match.empty() && match.back() != '/') {  // GLOB_MARK: directories end in '/'
          out.push_back(fs::path(match).lexically_normal().string());
        }
      }
    } else if (rc != GLOB_NOMATCH) {
      error(at, "cannot expand include pattern " + detail::quote(joined.string()));
      failed_ = true;
    }
    globfree(&matches);
    std::sort(out.begin(), out.end());
    return out;
  }

  void error(const SourcePos& pos, std::string message) {
    diagnostics_.push_back(Diagnostic{pos, std::move(message)});
  }

  Diagnostics& diagnostics_;
  std::vector<Document> documents_;
  std::vector<std::string> files_;
  std::vector<std::pair<std::string, std::string>> stack_;  // identity, name: files being read
  std::map<std::string, std::string> seen_;                 // identity -> name
  bool failed_ = false;
};

// File order (main first, then includes as read), then line and column.
void sortDiagnostics(Diagnostics& diagnostics, const std::vector<std::string>& files) {
  const auto rank = [&](const Diagnostic& d) {
    const auto it = std::find(files.begin(), files.end(), d.pos.file);
    return std::tuple(static_cast<size_t>(it - files.begin()), d.pos.line, d.pos.column);
  };
  std::stable_sort(diagnostics.begin(), diagnostics.end(),
                   [&](const Diagnostic& a, const Diagnostic& b) { return rank(a) < rank(b); });
}

template <typename Start>
LoadResult load(const std::string& path, const FilterValidator& validate_filter, Start start) {
  LoadResult result;
  try {
    DocumentLoader loader(result.diagnostics);
    start(loader);
    detail::ConfigBuilder builder(result.diagnostics);
    for (const Document& document : loader.documents()) {
      builder.addDocument(document.root, document.file);
    }
    builder.resolve(validate_filter, /*check_references=*/!loader.failed());
    sortDiagnostics(result.diagnostics, loader.files());
    auto config = std::make_shared<Config>(std::move(builder.config()));
    config->path = path;
    config->files = loader.files();
    result.partial = config;
    if (result.diagnostics.empty()) {
      result.config = std::move(config);
    }
  } catch (const std::exception& e) {
    result.diagnostics.push_back(
        {SourcePos{path, 0, 0}, std::string("internal error: ") + e.what()});
  } catch (...) {
    result.diagnostics.push_back({SourcePos{path, 0, 0}, "internal error"});
  }
  if (!result.diagnostics.empty()) {
    result.config.reset();
  }
  return result;
}

}  // namespace

LoadResult loadFile(const std::string& path, const FilterValidator& validate_filter) {
  return load(path, validate_filter,
              [&](DocumentLoader& loader) { loader.loadFile(path, std::nullopt); });
}

LoadResult loadString(std::string_view text, const std::string& name,
                      const FilterValidator& validate_filter) {
  return load(name, validate_filter, [&](DocumentLoader& loader) {
    loader.loadText(text, name, fs::path(), identity(name));
  });
}

}  // namespace sluice::conf
