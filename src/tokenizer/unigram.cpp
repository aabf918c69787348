// Why: see unigram.h.
#include "tokenizer/unigram.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>

#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

namespace {

constexpr double kUnknownPenalty = 10.0;  // HF's K_UNK_PENALTY

}  // namespace

std::unique_ptr<UnigramModel> UnigramModel::from_json(const JsonAt& model) {
  std::unique_ptr<UnigramModel> unigram(new UnigramModel());
  JsonAt vocab = model.at("vocab");
  vocab.expect_array();
  if (vocab.size() == 0) vocab.fail("the Unigram vocab is empty (it needs at least the unknown piece)");
  if (!model.has_value("unk_id")) {
    model.fail("unk_id is null: a Unigram model without an unknown piece cannot encode unseen characters");
  }
  const int64_t unk_id = model.at("unk_id").as_int();
  if (unk_id < 0 || unk_id >= static_cast<int64_t>(vocab.size())) {
    model.at("unk_id").fail("unk_id ", unk_id, " is outside the vocab of ", vocab.size(), " pieces");
  }
  unigram->unk_id_ = static_cast<int32_t>(unk_id);
  unigram->byte_fallback_ = model.bool_or("byte_fallback", false);

  // The trie is built with ordered child maps, then flattened (node numbers stay).
  std::vector<std::map<uint8_t, uint32_t>> children(1);
  unigram->node_token_.assign(1, -1);
  double min_score = std::numeric_limits<double>::infinity();
  for (size_t id = 0; id < vocab.size(); ++id) {
    JsonAt entry = vocab.at(id);
    if (!entry.json().is_array() || entry.size() != 2) {
      entry.fail("expected [piece, score], found ", entry.json().dump());
    }
    std::string piece = entry.at(size_t{0}).as_string();
    const double score = entry.at(size_t{1}).as_number();
    if (piece.empty()) entry.fail("an empty piece");
    min_score = std::min(min_score, score);
    uint32_t node = 0;
    for (unsigned char byte : piece) {
      auto [it, added] = children[node].try_emplace(byte, static_cast<uint32_t>(children.size()));
      if (added) {
        children.emplace_back();
        unigram->node_token_.push_back(-1);
      }
      node = it->second;
    }
    unigram->node_token_[node] = static_cast<int32_t>(id);
    unigram->ids_.insert_or_assign(piece, static_cast<int32_t>(id));
    unigram->pieces_.push_back(std::move(piece));
    unigram->scores_.push_back(score);
  }
  unigram->unk_score_ = min_score - kUnknownPenalty;
  for (const auto& edges : children) {
    unigram->first_edge_.push_back(static_cast<uint32_t>(unigram->edge_byte_.size()));
    for (const auto& [byte, child] : edges) {
      unigram->edge_byte_.push_back(byte);
      unigram->edge_node_.push_back(child);
    }
  }
  unigram->first_edge_.push_back(static_cast<uint32_t>(unigram->edge_byte_.size()));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = unigram->ids_.find(std::string_view(name));
    unigram->byte_ids_[b] = it == unigram->ids_.end() ? -1 : it->second;
  }
  return unigram;
}

template <class Emit>
void UnigramModel::prefixes(std::string_view text, Emit&& emit) const {
  uint32_t node = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto begin = edge_byte_.begin() + first_edge_[node], end = edge_byte_.begin() + first_edge_[node + 1];
    const auto edge = std::lower_bound(begin, end, static_cast<uint8_t>(text[i]));
    if (edge == end || *edge != static_cast<uint8_t>(text[i])) return;
    node = edge_node_[static_cast<size_t>(edge - edge_byte_.begin())];
    if (node_token_[node] >= 0) emit(i + 1, node_token_[node]);
  }
}

void UnigramModel::tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  struct Best {
    double score = 0;
    int64_t start = -1;  // where the best path's last piece starts; -1: no path ends here yet
    int32_t id = 0;
  };
  std::vector<Best> best(word.size() + 1);  // (bytes + 1) the best path ending at each byte position
  auto propose = [&](size_t start, size_t end, int32_t id, double score) {
    Best& target = best[end];
    if (target.start < 0 || score > target.score) target = {score, static_cast<int64_t>(start), id};
  };
  for (size_t start = 0; start < word.size();) {
    const double here = best[start].score;
    const size_t lead_length = utf8::sequence_length(static_cast<unsigned char>(word[start]));
    const size_t char_length = std::min(lead_length, word.size() - start);
    bool single = false;
    prefixes(word.substr(start), [&](size_t length, int32_t id) {
      propose(start, start + length, id, here + scores_[static_cast<size_t>(id)]);
      single = single || length == char_length;
    });
    if (!single) propose(start, start + char_length, unk_id_, here + unk_score_);
    start += char_length;
  }

  // Walk back from the end; runs of unknown pieces fuse into one string.
  std::vector<std::pair<size_t, size_t>> path;  // [begin, end) of each string, last first
  std::vector<int32_t> path_ids;                // its id, -1 for a run of unknowns
  for (size_t end = word.size(); end > 0;) {
    const Best& node = best[end];
    const auto start = static_cast<size_t>(node.start);
    if (node.id == unk_id_ && !path_ids.empty() && path_ids.back() < 0) {
      path.back().first = start;
    } else {
      path.emplace_back(start, end);
      path_ids.push_back(node.id == unk_id_ ? -1 : node.id);
    }
    end = start;
  }
  for (size_t k = path.size(); k-- > 0;) {
    if (path_ids[k] >= 0) {
      ids.push_back(path_ids[k]);
      continue;
    }
    const std::string_view text = word.substr(path[k].first, path[k].second - path[k].first);
    if (auto it = ids_.find(text); it != ids_.end()) {
      ids.push_back(it->second);
      continue;
    }
    bool bytes_known = byte_fallback_;
    for (unsigned char byte : text) bytes_known = bytes_known && byte_ids_[byte] >= 0;
    if (!bytes_known) {
      ids.push_back(unk_id_);
      continue;
    }
    for (unsigned char byte : text) ids.push_back(byte_ids_[byte]);
  }
}

std::optional<int32_t> UnigramModel::token_to_id(std::string_view token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string* UnigramModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) return nullptr;
  return &pieces_[static_cast<size_t>(id)];
}

}  // namespace moetune::tokenizer
