// Why: for a model folder with a SentencePiece tokenizer.model and no tokenizer.json, Transformers 5
// (AutoTokenizer.from_pretrained) converts the model into a `tokenizers` tokenizer when it loads it; those are the ids
// the model is used with, so they are the ids moetune must train on. This builds the same tokenizer.json document from
// the folder, and moetune's tokenizer (tokenizer.h) encodes and decodes with it as with any tokenizer.json. The
// converted document differs from what SentencePiece itself would do (no dummy prefix before a leading space, none at
// all in the generic conversion, HF's own BPE and Unigram segmentation); Transformers 5.17's rules, reproduced:
//
// Class (AutoTokenizer, without mistral-common installed): tokenizer_config.json's tokenizer_class, else config.json's;
// but where config.json's model_type maps to the generic TokenizersBackend (mixtral, mistral) a different class is
// overridden by it, and a specific mapped class (Qwen2Tokenizer for qwen2_moe/qwen3_moe, GPTNeoXTokenizer for olmoe) is
// used when no class is named. No class at all (llama maps to none) or an unknown one: TokenizersBackend. "...Fast" is
// the class without the suffix. moetune converts for LlamaTokenizer and TokenizersBackend and refuses the others.
//
// LlamaTokenizer (whatever the model type, even unigram):
//   model       BPE over all pieces (ids = piece order), merges generated from the vocab: for each piece in id order,
//               each split into two pieces of the vocab, shorter left part first; unk_token null, byte_fallback true
//               (characters with neither a piece nor byte pieces are dropped), fuse_unk
//   normalizer  none (the model's own normalization rules are ignored)
//   pre-token.  Metaspace("▁", split=false), prepend_scheme "always" when legacy is true, "first" (only the text's
//               start, not text after a special token) when legacy is false or absent (Transformers 5's default),
//               "never" when add_prefix_space is false; a piece already starting with "▁" (a text starting with a
//               space) gets no second one
//   decoder     Replace("▁"->" "), ByteFallback, Fuse, and Strip(one leading space) unless add_prefix_space is false
//   specials    bos/eos/unk default to "<s>" "</s>" "<unk>" where tokenizer_config.json has no such key
// TokenizersBackend (generic):
//   model       BPE as above but unk_token = the model's unk piece and byte_fallback as trained; or Unigram (unigram.h)
//               with the model's unk_id and byte_fallback for a unigram model
//   normalizer  Replace(" "->"▁") only: no dummy prefix at all
//   decoder     Replace("▁"->" "), plus ByteFallback and Fuse when byte_fallback
//   specials    bos/eos/unk default to the model's pieces for them (where their ids are not -1)
// Added tokens (both; sentencepiece_added_tokens.h): in this order: added_tokens_decoder (by id), the named special
//   tokens (special_tokens.h: bos, eos, unk, sep, pad, cls, mask, where special_tokens_map.json overrides
//   tokenizer_config.json when the latter has no added_tokens_decoder; then other "*_token" keys and a dict
//   extra_special_tokens), then the extra special tokens (additional_special_tokens / extra_special_tokens, or,
//   where tokenizer_config.json has neither, the model's control pieces as special and user-defined pieces as
//   non-special tokens), each named or extra one
//   left out when its content is in added_tokens_decoder or an equal value is already listed; a token given as a
//   string is special and not normalized. A token is special when any entry for it is (a named one always), and takes
//   the other flags (lstrip, rstrip, single_word, normalized) of its last entry. A piece keeps its id; other tokens
//   follow the pieces in that order.
// Post-processor: TemplateProcessing with BOS first when add_bos_token, EOS last when add_eos_token (both default
//   false; false when there is no such token).
// Decode: HF's decode of the document (Transformers' clean_up_tokenization_spaces is ignored for BPE).
//
// Refused with an error naming the file and the field: another tokenizer class, a model_type moetune does not know,
// auto_map (remote code), split_special_tokens, fix_mistral_regex, clean_up_tokenization_spaces with a Unigram model,
// a normalizer charsmap (nmt_nfkc...) in the generic conversion (HF's Precompiled normalizer is not implemented),
// added_tokens_decoder in the generic unigram conversion (Transformers fails to load it), an added_tokens_decoder id
// that is not the id Transformers gives the token, added_tokens.json, special_tokens_map.json keys other than the
// seven named ones, WORD/CHAR models, token values Transformers cannot read, BOS/EOS its template cannot hold.
// sp_model_kwargs is ignored, as in Transformers 5 (it never runs SentencePiece).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace moetune::tokenizer {

// The tokenizer.json document for `folder`/tokenizer.model, with `folder`/tokenizer_config.json, config.json and
// special_tokens_map.json where present.
nlohmann::json convert_sentencepiece_folder(const std::string& folder);

// The named special tokens Transformers' tokenizer for `folder`/tokenizer.model holds, key -> content, in its order
// (special_tokens.h): those of its files, else the converting class's defaults ("specials" above).
std::vector<std::pair<std::string, std::string>> sentencepiece_special_tokens(const std::string& folder);

}  // namespace moetune::tokenizer
