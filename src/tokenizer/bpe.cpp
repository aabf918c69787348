#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <shared_mutex>

#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

namespace {

constexpr size_t kCacheMaxWordBytes = 256;  // HF's MAX_LENGTH: longer words are not cached
constexpr size_t kCacheCapacity = 1 << 17;  // entries; once full, new words are no longer cached (as HF)
constexpr int64_t kMaxTokenId = 1 << 24;
constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, SentencePiece's word-start mark

// True when some character other than U+2581 is directly followed by U+2581 in `token`.
bool has_inner_metaspace(std::string_view token) {
  for (size_t at = token.find(kMetaspace); at != std::string_view::npos; at = token.find(kMetaspace, at + 1)) {
    if (at > 0 && (at < kMetaspace.size() || token.substr(at - kMetaspace.size(), kMetaspace.size()) != kMetaspace)) {
      return true;
    }
  }
  return false;
}

}  // namespace

// word -> ids, in shards chosen by the word's hash, each under its own reader/writer lock on its own cache line: with
// one lock for the whole cache, every lookup of every thread wrote the same lock word, and 16 threads spent their time
// moving that cache line between cores. Readers share a shard's lock; a writer only inserts when it gets the lock at
// once (as HF's try_write), so threads never wait on each other for the cache. Cached ids are the ids BPE gives, so
// which words happen to be cached never changes a result.
class WordCache {
 public:
  bool get(std::string_view word, std::vector<int32_t>& ids) const {
    const Shard& shard = shards_[shard_of(word)];
    std::shared_lock lock(shard.mutex);
    auto it = shard.map.find(word);
    if (it == shard.map.end()) return false;
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(std::string_view word, const int32_t* ids, size_t count) {
    Shard& shard = shards_[shard_of(word)];
    std::unique_lock lock(shard.mutex, std::try_to_lock);
    if (!lock.owns_lock() || shard.map.size() >= kCacheCapacity / kShards) return;
    shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + count));
  }

 private:
  static constexpr size_t kShards = 64;
  struct alignas(64) Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  // The top bits of the hash: the maps inside use it modulo their bucket count.
  static size_t shard_of(std::string_view word) { return (StringHash{}(word) >> 58) % kShards; }
  Shard shards_[kShards];
};

BpeModel::BpeModel() : cache_(std::make_unique<WordCache>()) { std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1); }
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

namespace {

uint64_t merge_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
uint64_t merge_slot(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 20; }

}  // namespace

const BpeModel::MergeEntry* BpeModel::find_merge(int32_t left, int32_t right) const {
  if (merges_.empty()) return nullptr;
  uint64_t key = merge_key(left, right);
  for (uint64_t slot = merge_slot(key) & merge_mask_;; slot = (slot + 1) & merge_mask_) {
    const MergeEntry& e = merges_[slot];
    if (e.key == key) return &e;
    if (e.key == ~uint64_t{0}) return nullptr;
  }
}

void BpeModel::insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id) {
  uint64_t key = merge_key(left, right);
  for (uint64_t slot = merge_slot(key) & merge_mask_;; slot = (slot + 1) & merge_mask_) {
    MergeEntry& e = merges_[slot];
    if (e.key == key || e.key == ~uint64_t{0}) {  // a repeated pair keeps the later rank, as HF's HashMap collect
      e = {key, rank, new_id};
      return;
    }
  }
}

BpeModel BpeModel::from_json(const JsonAt& model) {
  BpeModel bpe;
  if (model.has_value("dropout") && model.at("dropout").as_number() != 0.0) {
    model.at("dropout").fail("BPE dropout is not supported (it makes encoding random); it must be null");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.has_value(key) && !model.at(key).as_string().empty()) {
      model.at(key).fail("a non-empty ", key, " is not supported (byte-level and SentencePiece BPE do not use it)");
    }
  }
  bpe.fuse_unk_ = model.bool_or("fuse_unk", false);
  bpe.byte_fallback_ = model.bool_or("byte_fallback", false);
  bpe.ignore_merges_ = model.bool_or("ignore_merges", false);

  JsonAt vocab = model.at("vocab");
  vocab.expect_object();
  int64_t max_id = -1;
  bpe.vocab_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.json().items()) {
    JsonAt id_at(id_json, model.file(), vocab.path() + "[" + nlohmann::json(token).dump() + "]");
    int64_t id = id_at.as_int();
    if (id < 0 || id >= kMaxTokenId) id_at.fail("token id ", id, " is outside [0, ", kMaxTokenId, ")");
    bpe.vocab_.emplace(token, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  bpe.vocab_r_.assign(static_cast<size_t>(max_id + 1), std::string());
  bpe.has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : bpe.vocab_) {
    if (bpe.has_id_[id]) {
      vocab.fail("id ", id, " is given to two tokens, ", nlohmann::json(bpe.vocab_r_[id]).dump(), " and ",
                 nlohmann::json(token).dump());
    }
    bpe.vocab_r_[id] = token;
    bpe.has_id_[id] = true;
  }

  if (model.has_value("unk_token")) {
    std::string unk = model.at("unk_token").as_string();
    auto it = bpe.vocab_.find(unk);
    if (it == bpe.vocab_.end()) model.at("unk_token").fail("unk_token ", nlohmann::json(unk).dump(), " is not in model.vocab");
    bpe.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe.vocab_.find(std::string_view(name));
    if (it != bpe.vocab_.end()) bpe.byte_ids_[b] = it->second;
  }

  if (!bpe.ignore_merges_ && bpe.vocab_.count(kMetaspace)) {
    bpe.cut_before_metaspace_ = true;
    for (const auto& entry : bpe.vocab_) {
      if (has_inner_metaspace(entry.first)) {
        bpe.cut_before_metaspace_ = false;
        break;
      }
    }
  }

  JsonAt merges = model.at("merges");
  merges.expect_array();
  size_t capacity = 16;
  while (capacity < merges.size() * 2 + 16) capacity *= 2;
  bpe.merges_.assign(capacity, MergeEntry{});
  bpe.merge_mask_ = capacity - 1;
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    JsonAt merge = merges.at(rank);
    if (merge.json().is_string()) {  // legacy "a b": exactly one space (HF's convert_merges_to_hashmap)
      std::string line = merge.as_string();
      size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        merge.fail("a merge written as a string must be two tokens separated by one space, found ",
                   nlohmann::json(line).dump());
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.json().is_array() && merge.size() == 2) {
      left = merge.at(size_t{0}).as_string();
      right = merge.at(size_t{1}).as_string();
    } else {
      merge.fail("expected a merge as \"a b\" or [\"a\", \"b\"], found ", merge.json().dump());
    }
    auto id_of = [&](const std::string& token) {
      auto it = bpe.vocab_.find(token);
      if (it == bpe.vocab_.end()) merge.fail("merge token ", nlohmann::json(token).dump(), " is not in model.vocab");
      return it->second;
    };
    int32_t a = id_of(left), b = id_of(right), merged = id_of(left + right);
    bpe.insert_merge(a, b, static_cast<int32_t>(rank), merged);
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_id_[id]) return nullptr;
  return &vocab_r_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (!cut_before_metaspace_) {
    tokenize_piece(word, ids);
    return;
  }
  size_t start = 0;
  for (size_t at = word.find(kMetaspace, 1); at != std::string_view::npos; at = word.find(kMetaspace, at + 1)) {
    if (at < kMetaspace.size() || word.substr(at - kMetaspace.size(), kMetaspace.size()) != kMetaspace) {
      tokenize_piece(word.substr(start, at - start), ids);
      start = at;
    }
  }
  tokenize_piece(word.substr(start), ids);
}

void BpeModel::tokenize_piece(std::string_view word, std::vector<int32_t>& ids) const {
  if (cache_->get(word, ids)) return;
  size_t before = ids.size();
  merge_word(word, ids);
  if (word.size() < kCacheMaxWordBytes) cache_->put(word, ids.data() + before, ids.size() - before);
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std heap functions build a max-heap; "greater" puts the lowest rank, then the leftmost position, on top.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

}  // namespace

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  auto add = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, true});
    if (n > 0) symbols[n - 1].next = n;
  };

  // 1. Characters -> ids (HF's BPE::merge_word).
  bool pending_unk = false;
  for (size_t at = 0; at < word.size();) {
    size_t len = std::min(utf8::sequence_length(static_cast<unsigned char>(word[at])), word.size() - at);
    std::string_view ch = word.substr(at, len);
    at += len;
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      if (pending_unk) {
        add(*unk_id_);
        pending_unk = false;
      }
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {  // as HF: a pending unk is not flushed before the bytes
        for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*unk_id_);
      pending_unk = true;
    }
    // no vocab entry, no byte fallback, no unk token: the character is dropped (as HF)
  }
  if (pending_unk) add(*unk_id_);
  if (symbols.empty()) return;

  // 2. Merges, lowest rank first, leftmost first among equal ranks (HF's Word::merge_all without dropout).
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeEntry* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      heap.push_back({m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const MergeEntry* current = find_merge(left.id, right.id);
    if (!current || current->new_id != top.new_id) continue;  // stale candidate
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeEntry* m = find_merge(symbols[left.prev].id, left.id)) {
        heap.push_back({m->rank, left.prev, m->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
    if (left.next >= 0) {
      if (const MergeEntry* m = find_merge(left.id, symbols[left.next].id)) {
        heap.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace moetune::tokenizer
