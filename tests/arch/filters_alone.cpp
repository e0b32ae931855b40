// Links every filter with conf/ alone (no proxy/, no libuv) and builds each shipped filter type
// from a small config: a filter that reached into proxy/ would not link.

#include <cstdio>

#include "filters/filter.h"

int main() {
  using sluice::conf::FilterConfig;
  int failures = 0;
  for (const char* text : {"name = \"o\"\ntype = \"origin\"\nallow = [\"https://a.example\"]\n",
                           "name = \"m\"\ntype = \"message_limits\"\nmax_message_bytes = 10\n"}) {
    auto table = std::make_shared<toml::table>(
        toml::parse(std::string_view(text), std::string_view("alone.toml")));
    FilterConfig c;
    c.name = table->get("name")->as_string()->get();
    c.type = table->get("type")->as_string()->get();
    c.options = table;
    c.pos = {"alone.toml", 1, 1};
    sluice::conf::Diagnostics d;
    if (!sluice::filters::buildFilter(c, d)) {
      fprintf(stderr, "%s: %s\n", c.type.c_str(), d.empty() ? "?" : d[0].format().c_str());
      ++failures;
    }
  }
  printf("filters build alone: %s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
