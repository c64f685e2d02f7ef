// libFuzzer target for the decoders of untrusted bytes (see decoder_fuzz_one.h for what each
// input checks). Built only by tools/fuzz (clang++ -fsanitize=fuzzer,address,undefined, into
// build-fuzz/); the same checks run over the committed corpus in every `tools/test` through
// decoder_corpus_replay (replay_main.cc), which needs no clang.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/decoder_fuzz_one.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bidmesh::fuzz::fuzz_decoders(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
