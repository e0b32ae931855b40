// A small, deterministic fuzzing driver for builds without libFuzzer (gcc, CI): runs the seed
// corpus, then mutations of it (bit flips, byte insertions and deletions, splices, random
// bytes) for a fixed number of iterations. Bounded in count and time by construction.
//
//   fuzz_x_smoke [ITERATIONS] [CORPUS_DIR...]

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
void runOne(const std::string& s) {
  // A copy in an exact-size buffer, so ASan catches reads past the end.
  std::vector<uint8_t> buf(s.begin(), s.end());
  LLVMFuzzerTestOneInput(buf.data(), buf.size());
}
}  // namespace

int main(int argc, char** argv) {
  long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::vector<std::string> corpus;
  for (int i = 2; i < argc; ++i) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[i], ec)) {
      if (!entry.is_regular_file()) {
        continue;
      }
      std::ifstream f(entry.path(), std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  if (corpus.empty()) {
    corpus.emplace_back();
  }
  for (const std::string& s : corpus) {
    runOne(s);
  }
  std::mt19937_64 rng(0x5eed);
  for (long it = 0; it < iterations; ++it) {
    std::string s = corpus[rng() % corpus.size()];
    int mutations = 1 + static_cast<int>(rng() % 8);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 6) {
        case 0:  // flip a bit
          if (!s.empty()) {
            s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
          }
          break;
        case 1:  // set a random byte
          if (!s.empty()) {
            s[rng() % s.size()] = static_cast<char>(rng());
          }
          break;
        case 2:  // insert bytes
          s.insert(s.empty() ? 0 : rng() % s.size(),
                   std::string(1 + rng() % 4, static_cast<char>(rng())));
          break;
        case 3:  // delete a range
          if (!s.empty()) {
            size_t at = rng() % s.size();
            s.erase(at, 1 + rng() % 8);
          }
          break;
        case 4: {  // splice with another seed
          const std::string& other = corpus[rng() % corpus.size()];
          if (!other.empty()) {
            size_t from = rng() % other.size();
            s.insert(s.empty() ? 0 : rng() % s.size(), other.substr(from, 1 + rng() % 32));
          }
          break;
        }
        default:  // random tail
          for (int k = 0, n = static_cast<int>(rng() % 16); k < n; ++k) {
            s.push_back(static_cast<char>(rng()));
          }
      }
    }
    if (s.size() > 64 * 1024) {
      s.resize(64 * 1024);
    }
    runOne(s);
  }
  printf("%ld inputs ran without a crash\n", iterations + static_cast<long>(corpus.size()));
  return 0;
}
