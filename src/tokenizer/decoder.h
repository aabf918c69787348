// Why: the "decoder" of tokenizer.json turns token strings back into text. Supported, each with HF's decode_chain:
//   ByteLevel     GPT-2 characters -> bytes (a token with a character outside the table is taken as its own UTF-8),
//                 then the bytes as UTF-8 with maximal invalid subparts replaced by U+FFFD (from_utf8_lossy)
//   Metaspace     replacement -> ' ', dropped in the first token unless prepend_scheme is "never"
//   Replace       {"String"|"Regex"} pattern -> content, per token
//   ByteFallback  runs of <0xXX> tokens -> their bytes as UTF-8, or one U+FFFD per byte when that is invalid
//   Fuse          all tokens -> one
//   Strip         up to `start` leading and `stop` trailing `content` characters removed from each token
//   Sequence      of those
// With no decoder, HF joins the tokens with spaces; so does moetune.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_path.h"

namespace moetune::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// `spec` is a non-null decoder object.
std::unique_ptr<Decoder> make_decoder(const tokenizer_json::JsonAt& spec);

}  // namespace moetune::tokenizer
