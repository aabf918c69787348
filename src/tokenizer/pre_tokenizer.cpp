#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <array>
#include <vector>

#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100.. in order.
struct ByteTables {
  std::array<std::string, 256> chars;
  std::array<int, 324> bytes;  // indexed by code point (all are < 0x144)
  ByteTables() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(0x100 + extra++);
      utf8::append(chars[b], c);
      bytes[c] = b;
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables tables;
  return tables;
}

// The pattern HF's ByteLevel pre-tokenizer uses when use_regex is true (GPT-2's).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t start;
  size_t end;
  bool flag;  // is_match while matching; "remove" after the behavior is applied
};

// HF's Pattern::find_matches: the whole text as alternating non-match / match spans (an empty text is one span).
void find_spans(const Regex& pattern, std::string_view text, std::vector<Span>& spans) {
  spans.clear();
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return;
  }
  size_t previous = 0;
  pattern.for_each_match(text, [&](size_t start, size_t end) {
    if (previous != start) spans.push_back({previous, start, false});
    spans.push_back({start, end, true});
    previous = end;
  });
  if (previous != text.size()) spans.push_back({previous, text.size(), false});
}

// HF's NormalizedString::split: spans of (start, end, is_match) -> pieces (start, end, remove).
void apply_behavior(Behavior behavior, std::vector<Span>& spans) {
  std::vector<Span> out;
  out.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Isolated:
      for (Span& s : spans) s.flag = false;
      return;
    case Behavior::Removed:
      return;
    case Behavior::Contiguous:
      for (const Span& s : spans) {
        if (s.flag == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.start, s.end, false});
        }
        previous_match = s.flag;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Span& s : spans) {
        if (s.flag && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.start, s.end, false});
        }
        previous_match = s.flag;
      }
      break;
    case Behavior::MergedWithNext:
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.flag && !previous_match && !out.empty()) {
          out.back().start = s.start;
        } else {
          out.push_back({s.start, s.end, false});
        }
        previous_match = s.flag;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  spans.swap(out);
}

void emit_spans(std::string_view text, bool at_start, const std::vector<Span>& spans, EmitWord emit) {
  for (const Span& s : spans) {
    if (s.flag || s.end == s.start) continue;  // removed, or empty (HF drops empty splits)
    emit(text.substr(s.start, s.end - s.start), at_start && s.start == 0);
  }
}

class Split final : public PreTokenizer {
 public:
  explicit Split(const JsonAt& spec) : pattern_(make_pattern(spec.at("pattern"))), invert_(spec.bool_or("invert", false)) {
    std::string behavior = spec.at("behavior").as_string();
    if (behavior == "Removed") behavior_ = Behavior::Removed;
    else if (behavior == "Isolated") behavior_ = Behavior::Isolated;
    else if (behavior == "MergedWithPrevious") behavior_ = Behavior::MergedWithPrevious;
    else if (behavior == "MergedWithNext") behavior_ = Behavior::MergedWithNext;
    else if (behavior == "Contiguous") behavior_ = Behavior::Contiguous;
    else spec.at("behavior").fail("unknown Split behavior \"", behavior, "\"");
  }
  void split(std::string_view text, bool at_start, EmitWord emit) const override {
    if (behavior_ == Behavior::Isolated) {  // the common case (Qwen, Llama 3, DeepSeek): no span list needed
      size_t previous = 0;
      pattern_.for_each_match(text, [&](size_t start, size_t end) {
        if (previous != start) emit(text.substr(previous, start - previous), at_start && previous == 0);
        if (end != start) emit(text.substr(start, end - start), at_start && start == 0);
        previous = end;
      });
      if (previous != text.size()) emit(text.substr(previous), at_start && previous == 0);
      return;
    }
    std::vector<Span> spans;
    find_spans(pattern_, text, spans);
    if (invert_) {
      for (Span& s : spans) s.flag = !s.flag;
    }
    apply_behavior(behavior_, spans);
    emit_spans(text, at_start, spans, emit);
  }

 private:
  Regex pattern_;
  bool invert_;
  Behavior behavior_ = Behavior::Isolated;
};

class ByteLevel final : public PreTokenizer {
 public:
  explicit ByteLevel(const JsonAt& spec)
      : add_prefix_space_(spec.bool_or("add_prefix_space", true)), use_regex_(spec.bool_or("use_regex", true)) {
    if (use_regex_) pattern_ = std::make_unique<Regex>(Regex::oniguruma(kGpt2Pattern, spec));
  }
  void split(std::string_view text, bool at_start, EmitWord emit) const override {
    std::string prefixed;
    if (add_prefix_space_ && (text.empty() || text.front() != ' ')) {
      prefixed.reserve(text.size() + 1);
      prefixed += ' ';
      prefixed.append(text);
      text = prefixed;
    }
    std::string mapped;
    auto map_and_emit = [&](std::string_view word, bool start) {
      mapped.clear();
      const ByteTables& tables = byte_tables();
      for (char c : word) mapped += tables.chars[static_cast<unsigned char>(c)];
      emit(mapped, start);
    };
    if (!use_regex_) {
      if (!text.empty()) map_and_emit(text, at_start);
      return;
    }
    size_t previous = 0;
    pattern_->for_each_match(text, [&](size_t start, size_t end) {
      if (previous != start) map_and_emit(text.substr(previous, start - previous), at_start && previous == 0);
      if (end != start) map_and_emit(text.substr(start, end - start), at_start && start == 0);
      previous = end;
    });
    if (previous != text.size()) map_and_emit(text.substr(previous), at_start && previous == 0);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
  std::unique_ptr<Regex> pattern_;
};

class Metaspace final : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };

  explicit Metaspace(const JsonAt& spec) : split_(spec.bool_or("split", true)) {
    std::string replacement = spec.at("replacement").as_string();
    size_t at = 0;
    if (replacement.empty() || (utf8::next(replacement, at), at != replacement.size())) {
      spec.at("replacement").fail("the Metaspace replacement must be one character, found \"", replacement, "\"");
    }
    replacement_ = replacement;
    if (spec.has_value("prepend_scheme")) {
      std::string scheme = spec.at("prepend_scheme").as_string();
      if (scheme == "always") prepend_ = Prepend::Always;
      else if (scheme == "first") prepend_ = Prepend::First;
      else if (scheme == "never") prepend_ = Prepend::Never;
      else spec.at("prepend_scheme").fail("unknown prepend_scheme \"", scheme, "\"");
    } else {  // files written before prepend_scheme existed
      prepend_ = spec.bool_or("add_prefix_space", true) ? Prepend::Always : Prepend::Never;
    }
  }
  void split(std::string_view text, bool at_start, EmitWord emit) const override {
    std::string replaced;
    replaced.reserve(text.size() + 8);
    bool prepend = (prepend_ == Prepend::Always || (prepend_ == Prepend::First && at_start)) &&
                   !text.empty() &&
                   text.substr(0, replacement_.size()) != replacement_ && text.front() != ' ';
    if (prepend) replaced += replacement_;
    for (char c : text) {
      if (c == ' ') replaced += replacement_;
      else replaced += c;
    }
    if (!split_) {
      emit(replaced, at_start);
      return;
    }
    // Split on each replacement character, merged with the next piece (HF: MergedWithNext on a char pattern).
    std::vector<Span> spans;
    size_t previous = 0;
    for (size_t at = replaced.find(replacement_); at != std::string::npos;
         at = replaced.find(replacement_, at + replacement_.size())) {
      if (previous < at) spans.push_back({previous, at, false});
      spans.push_back({at, at + replacement_.size(), true});
      previous = at + replacement_.size();
    }
    if (previous < replaced.size()) spans.push_back({previous, replaced.size(), false});
    apply_behavior(Behavior::MergedWithNext, spans);
    emit_spans(replaced, at_start, spans, emit);
  }

 private:
  std::string replacement_;
  Prepend prepend_ = Prepend::Always;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(const JsonAt& spec) {
    JsonAt list = spec.at("pretokenizers");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) steps_.push_back(make_pre_tokenizer(list.at(i)));
  }
  void split(std::string_view text, bool at_start, EmitWord emit) const override { run(0, text, at_start, emit); }

 private:
  void run(size_t step, std::string_view text, bool at_start, EmitWord emit) const {
    if (step == steps_.size()) {
      emit(text, at_start);
      return;
    }
    steps_[step]->split(text, at_start, [&](std::string_view word, bool start) { run(step + 1, word, start, emit); });
  }

  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

const std::string& byte_to_chars(unsigned char byte) { return byte_tables().chars[byte]; }

int char_to_byte(char32_t c) { return c < 324 ? byte_tables().bytes[c] : -1; }

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonAt& spec) {
  std::string type = spec.at("type").as_string();
  if (type == "Split") return std::make_unique<Split>(spec);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(spec);
  if (type == "Metaspace") return std::make_unique<Metaspace>(spec);
  if (type == "Sequence") return std::make_unique<Sequence>(spec);
  spec.at("type").fail("pre_tokenizer type \"", type, "\" is not supported (moetune implements Split, ByteLevel, ",
                       "Metaspace, Sequence); encoding without it would give other ids than Hugging Face");
}

}  // namespace moetune::tokenizer
