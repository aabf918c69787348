// Why: the BPE model of HF tokenizers (models/bpe), reproduced so that every word gives the same ids:
//   - a word is split into characters; each character is a vocab token, or (byte_fallback) its UTF-8 bytes as <0xXX>
//     tokens, or the unk token (consecutive unks fused when fuse_unk), or, with none of those, dropped;
//   - then merges are applied lowest rank first (ties: leftmost), with a min-heap over the pairs of a linked list of
//     symbols, skipping stale heap entries, exactly as HF's Word::merge_all without dropout;
//   - ignore_merges: a word that is itself a vocab token is that token;
//   - words shorter than 256 bytes are cached (HF caches the same ones), so common words cost one hash lookup;
//   - SentencePiece-style models (Mixtral, Llama) have no pre-tokenizer, so a whole line is one "word" and nothing
//     would be cached. When no vocab token has "▁" right after another character (true of SentencePiece vocabularies,
//     whose pieces only start with "▁"), no merge can join the characters on the two sides of such a position, so
//     the word is cut before every "▁" that follows a non-"▁" character and the pieces are encoded (and cached) one by
//     one -- the same ids, since BPE on independent parts merges each part in the same order as on the whole.
// Refused with an error naming the JSON path: dropout other than null/0, a non-empty continuing_subword_prefix or
// end_of_word_suffix, merges naming tokens that are not in the vocab, duplicate ids.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_path.h"
#include "tokenizer/model.h"

namespace moetune::tokenizer {

class WordCache;

class BpeModel final : public Model {
 public:
  static BpeModel from_json(const tokenizer_json::JsonAt& model);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel() override;

  void tokenize(std::string_view word, std::vector<int32_t>& ids) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  const std::string* id_to_token(int32_t id) const override;
  size_t size() const override { return vocab_.size(); }
  int32_t max_id() const override { return static_cast<int32_t>(vocab_r_.size()) - 1; }

 private:
  BpeModel();
  void tokenize_piece(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  // Merges as an open-addressing table: (left id, right id) -> (rank, merged id).
  struct MergeEntry {
    uint64_t key = ~uint64_t{0};
    int32_t rank = 0;
    int32_t new_id = 0;
  };
  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id);

  StringToId vocab_;
  std::vector<std::string> vocab_r_;   // id -> token ("" and absent from vocab_ for holes)
  std::vector<bool> has_id_;
  std::vector<MergeEntry> merges_;     // size is a power of two
  uint64_t merge_mask_ = 0;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool cut_before_metaspace_ = false;  // see above
  int32_t byte_ids_[256];              // <0xXX> ids for byte_fallback (-1 where absent)
  std::unique_ptr<WordCache> cache_;
};

}  // namespace moetune::tokenizer
