// decoder_corpus_replay DIR...: feeds every file of the fuzz corpus (tests/fuzz/corpus) to the
// decoders with the same checks as the libFuzzer target (decoder_fuzz_one.h), in the normal
// build, so `tools/test` keeps every input the fuzzer ever found interesting working on a
// machine without clang. A broken invariant aborts; a missing or empty corpus fails.
// Exit codes: 0 all inputs passed, 100 usage, 111 the corpus cannot be read.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/decoder_fuzz_one.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: decoder_corpus_replay DIR...\n");
    return 100;
  }
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(argv[i], ec))
      if (entry.is_regular_file()) files.push_back(entry.path());
    if (ec) {
      std::fprintf(stderr, "decoder_corpus_replay: cannot read %s: %s\n", argv[i], ec.message().c_str());
      return 111;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "decoder_corpus_replay: no corpus files\n");
    return 111;
  }
  std::sort(files.begin(), files.end());
  std::size_t bytes = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "decoder_corpus_replay: cannot read %s\n", f.c_str());
      return 111;
    }
    bytes += data.size();
    bidmesh::fuzz::fuzz_decoders(data);
  }
  std::printf("decoder_corpus_replay: %zu inputs (%zu bytes) passed\n", files.size(), bytes);
  return 0;
}
