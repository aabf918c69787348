// Why: the "post_processor" of tokenizer.json adds special tokens (BOS/EOS, CLS/SEP) around an encoded sequence when
// add_special_tokens is true. For training, moetune usually builds sequences itself and encodes with
// add_special_tokens=false (then nothing is added, as in HF). Supported for a single sequence: TemplateProcessing
// ("single" template), RobertaProcessing and BertProcessing (cls $A sep), ByteLevel (offsets only: no ids change),
// and Sequence of those. Pair templates are read for validation but moetune encodes single sequences only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tokenizer/json_path.h"

namespace moetune::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

// `spec` is a non-null post_processor object.
std::unique_ptr<PostProcessor> make_post_processor(const tokenizer_json::JsonAt& spec);

}  // namespace moetune::tokenizer
