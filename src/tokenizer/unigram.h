// Why: Transformers 5 turns a unigram SentencePiece tokenizer.model into the Unigram model of HF tokenizers
// (sentencepiece_conversion.h), so moetune needs that model's segmentation, not SentencePiece's (whose ties and
// unknown-character handling differ between versions). HF's rules (models/unigram, encode_optimized), reproduced:
//   - a word is cut by a best-path search over its byte positions, character by character from the left: at each
//     character start, every vocab piece that begins there (shortest first, as a byte trie yields them) proposes a
//     path ending after it, scored best score so far + piece score in double precision; a proposal replaces the
//     path already ending at that position only when its score is strictly higher;
//   - a character that no one-character piece covers also proposes the unknown piece, scored min score - 10;
//   - walking back from the end, runs of unknown pieces fuse into one string;
//   - each string of the path is its vocab id; a string that is not in the vocab (fused unknowns) becomes its UTF-8
//     bytes as <0xXX> pieces when byte_fallback and all of them exist, else unk_id.
// Every vocab piece takes part (control, user-defined and byte pieces too, as in HF); a piece listed twice is found
// under its later id. Refused with an error naming the JSON path: an empty vocab, unk_id null or outside the vocab.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_path.h"
#include "tokenizer/model.h"

namespace moetune::tokenizer {

class UnigramModel final : public Model {
 public:
  // `model`: {"type": "Unigram", "unk_id": n, "vocab": [[piece, score], ...], "byte_fallback": bool}
  static std::unique_ptr<UnigramModel> from_json(const tokenizer_json::JsonAt& model);

  void tokenize(std::string_view word, std::vector<int32_t>& ids) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  const std::string* id_to_token(int32_t id) const override;
  size_t size() const override { return pieces_.size(); }
  int32_t max_id() const override { return static_cast<int32_t>(pieces_.size()) - 1; }

 private:
  UnigramModel() = default;
  // Calls emit(length, id) for each vocab piece that is a prefix of `text`, shortest first.
  template <class Emit>
  void prefixes(std::string_view text, Emit&& emit) const;

  std::vector<std::string> pieces_;  // (vocab) id -> piece
  std::vector<double> scores_;       // (vocab)
  StringToId ids_;                   // piece -> id (the later id for a piece listed twice)
  int32_t unk_id_ = 0;
  double unk_score_ = 0;             // min score - 10
  bool byte_fallback_ = false;
  int32_t byte_ids_[256];            // <0xXX> ids for byte_fallback (-1 where absent)

  // The pieces as a byte trie: node n's children are edges [first_edge_[n], first_edge_[n + 1]), sorted by byte.
  std::vector<uint32_t> first_edge_;
  std::vector<uint8_t> edge_byte_;
  std::vector<uint32_t> edge_node_;
  std::vector<int32_t> node_token_;  // the id of the piece that ends at the node, -1 for none
};

}  // namespace moetune::tokenizer
