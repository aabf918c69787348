// Why: the on-demand twin of the fixture tests: encodes the strings tools/tokenizer/fuzz_hf.py drew over all of
// Unicode with the seven fixture tokenizers and counts the ids that differ from HF's (printing the first few).
//
//   g++ -std=c++20 -O2 -Isrc src/tokenizer/*.cpp tools/tokenizer/fuzz_tokenizer.cpp -lpcre2-8 -licuuc -pthread \
//       -o build/fuzz_tokenizer && build/fuzz_tokenizer /tmp/tokenizer_fuzz.json
#include <cstdint>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_tokenizer <file written by tools/tokenizer/fuzz_hf.py>\n";
    return 2;
  }
  try {
    std::ifstream in(argv[1]);
    if (!in) moetune::fail(argv[1], ": cannot open");
    nlohmann::json data = nlohmann::json::parse(in);
    const auto& texts = data.at("texts");
    int total_mismatches = 0;
    for (const auto& [name, all_ids] : data.at("ids").items()) {
      moetune::Tokenizer tok = moetune::Tokenizer::from_folder(data.at("fixtures").get<std::string>() + "/" + name);
      int mismatches = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        auto want = all_ids[i].get<std::vector<int32_t>>();
        auto got = tok.encode(texts[i].get<std::string>());
        if (got != want && ++mismatches <= 3) {
          std::cout << name << " string #" << i << " " << nlohmann::json(texts[i]).dump(-1, ' ', true) << "\n  HF "
                    << nlohmann::json(want).dump() << "\n  us " << nlohmann::json(got).dump() << "\n";
        }
      }
      std::cout << name << ": " << mismatches << " of " << texts.size() << " strings differ\n";
      total_mismatches += mismatches;
    }
    return total_mismatches == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "fuzz_tokenizer: " << e.what() << "\n";
    return 1;
  }
}
