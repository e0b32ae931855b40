#include "filters/jwt/json_strict.h"

#include <vector>

namespace sluice::filters::jwt {

namespace {

using Json = nlohmann::json;

// Builds the document from SAX events. `stack_` holds the open containers; a pointer into a
// parent stays valid while the child is open because nothing is added to the parent meanwhile.
class Builder {
 public:
  Builder(size_t max_depth, std::string* why) : max_depth_(max_depth), why_(why) {}

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool v) { return add(Json(v)); }
  bool number_integer(Json::number_integer_t v) { return add(Json(v)); }
  bool number_unsigned(Json::number_unsigned_t v) { return add(Json(v)); }
  bool number_float(Json::number_float_t v, const Json::string_t&) { return add(Json(v)); }
  bool string(Json::string_t& v) { return add(Json(std::move(v))); }
  bool binary(Json::binary_t&) { return fail("binary value"); }

  bool start_object(size_t) { return open(Json::object()); }
  bool start_array(size_t) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(Json::string_t& k) {
    if (stack_.back()->contains(k)) {
      return fail("duplicate key");
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& e) {
    // nlohmann's messages quote a little of the input near the error, never much; keep only
    // the kind of error so that a token never reaches a log.
    return fail(e.id == 406 ? "number out of range" : "syntax error");
  }

  std::optional<Json> take() {
    if (!done_) {
      return std::nullopt;
    }
    return std::move(root_);
  }

 private:
  bool fail(const char* why) {
    if (why_->empty()) {
      *why_ = why;
    }
    return false;
  }

  Json* place(Json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      done_ = true;
      return &root_;
    }
    Json* top = stack_.back();
    if (top->is_array()) {
      top->push_back(std::move(v));
      return &top->back();
    }
    Json& slot = (*top)[key_];
    slot = std::move(v);
    return &slot;
  }

  bool add(Json&& v) {
    place(std::move(v));
    return true;
  }

  bool open(Json&& container) {
    if (stack_.size() >= max_depth_) {
      return fail("nested too deep");
    }
    Json* c = place(std::move(container));
    done_ = false;  // the root is complete only when its last container closes
    stack_.push_back(c);
    return true;
  }

  bool close() {
    stack_.pop_back();
    done_ = stack_.empty();
    return true;
  }

  size_t max_depth_;
  std::string* why_;
  Json root_;
  std::vector<Json*> stack_;
  std::string key_;
  bool done_ = false;
};

}  // namespace

std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string* why,
                                              size_t max_depth) {
  why->clear();
  Builder builder(max_depth, why);
  try {
    if (!Json::sax_parse(text.begin(), text.end(), &builder, Json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false)) {
      if (why->empty()) {
        *why = "syntax error";
      }
      return std::nullopt;
    }
  } catch (const std::exception&) {
    // Only allocation failure can get here; treat it as a refusal, not a crash.
    *why = "out of memory";
    return std::nullopt;
  }
  std::optional<Json> out = builder.take();
  if (!out) {
    *why = "syntax error";
  }
  return out;
}

}  // namespace sluice::filters::jwt
