// Why: the "pre_tokenizer" of tokenizer.json cuts each normalized piece into words that the BPE model encodes one by
// one. Supported, with HF's semantics:
//   Split      {"String"|"Regex"} pattern, behavior Removed / Isolated / MergedWithPrevious / MergedWithNext /
//              Contiguous, invert
//   ByteLevel  add_prefix_space (per piece), use_regex (the GPT-2 pattern), bytes mapped to GPT-2's printable chars;
//              trim_offsets only moves offsets, which moetune does not report
//   Metaspace  replacement, prepend_scheme always / first / never (or legacy add_prefix_space), split
//   Sequence   of those
// Words are handed on through a callback, so a 20 MB document never becomes a list of 5 million strings. `at_start`
// says whether the piece begins at offset 0 of the original text (Metaspace's "first" scheme needs it).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/function_ref.h"
#include "tokenizer/json_path.h"

namespace moetune::tokenizer {

using EmitWord = FunctionRef<void(std::string_view word, bool at_start)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::string_view text, bool at_start, EmitWord emit) const = 0;
};

// `spec` is a non-null pre_tokenizer object.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const tokenizer_json::JsonAt& spec);

// GPT-2's byte <-> printable character tables (HF's bytes_char / CHAR_BYTES).
const std::string& byte_to_chars(unsigned char byte);  // UTF-8 of the character that stands for `byte`
int char_to_byte(char32_t c);                          // -1 when `c` stands for no byte

}  // namespace moetune::tokenizer
