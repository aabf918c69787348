#include "tokenizer/decoder.h"

#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

namespace {

char32_t single_char(const JsonAt& at) {
  std::string text = at.as_string();
  size_t end = 0;
  if (text.empty() || (utf8::next(text, end), end != text.size())) at.fail("expected one character, found \"", text, "\"");
  end = 0;
  return utf8::next(text, end);
}

class ByteLevel final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      size_t mark = bytes.size();
      bool all = true;
      for (size_t at = 0; at < token.size();) {
        int b = char_to_byte(utf8::next(token, at));
        if (b < 0) {
          all = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!all) {
        bytes.resize(mark);
        bytes += token;
      }
    }
    tokens.assign(1, utf8::is_valid(bytes) ? bytes : utf8::replace_invalid(bytes));
  }
};

class Metaspace final : public Decoder {
 public:
  explicit Metaspace(const JsonAt& spec) : replacement_(single_char(spec.at("replacement"))) {
    if (spec.has_value("prepend_scheme")) {
      std::string scheme = spec.at("prepend_scheme").as_string();
      if (scheme != "always" && scheme != "first" && scheme != "never") {
        spec.at("prepend_scheme").fail("unknown prepend_scheme \"", scheme, "\"");
      }
      strip_first_ = scheme != "never";
    } else {
      strip_first_ = spec.bool_or("add_prefix_space", true);
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& token = tokens[i];
      for (size_t at = 0; at < token.size();) {
        char32_t c = utf8::next(token, at);
        if (c != replacement_) utf8::append(out, c);
        else if (!(i == 0 && strip_first_)) out += ' ';
      }
      tokens[i].swap(out);
    }
  }

 private:
  char32_t replacement_;
  bool strip_first_ = true;
};

class Replace final : public Decoder {
 public:
  explicit Replace(const JsonAt& spec) : pattern_(make_pattern(spec.at("pattern"))), content_(spec.at("content").as_string()) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = replace_matches(pattern_, token, content_);
  }

 private:
  Regex pattern_;
  std::string content_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xXX>" -> the byte, as HF: token of 6 bytes, "<0x" + u8::from_str_radix(2 chars, 16) + ">" (which also takes "+X").
int fallback_byte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  if (token[3] == '+') return hex_digit(token[4]);
  int hi = hex_digit(token[3]), lo = hex_digit(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallback final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&]() {
      if (pending.empty()) return;
      if (utf8::is_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      int b = fallback_byte(token);
      if (b >= 0) {
        pending += static_cast<char>(b);
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens.swap(out);
  }
};

class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& token : tokens) all += token;
    tokens.assign(1, std::move(all));
  }
};

class Strip final : public Decoder {
 public:
  explicit Strip(const JsonAt& spec) : content_(single_char(spec.at("content"))) {
    int64_t start = spec.at("start").as_int(), stop = spec.at("stop").as_int();
    if (start < 0) spec.at("start").fail("must not be negative");
    if (stop < 0) spec.at("stop").fail("must not be negative");
    start_ = static_cast<size_t>(start);
    stop_ = static_cast<size_t>(stop);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      std::vector<char32_t> chars;
      for (size_t at = 0; at < token.size();) chars.push_back(utf8::next(token, at));
      size_t start_cut = 0;
      for (size_t i = 0; i < start_ && i < chars.size() && chars[i] == content_; ++i) start_cut = i + 1;
      size_t stop_cut = chars.size();
      // HF indexes chars.len() - i - 1 for i < stop without a bound check (it would panic on a short token);
      // moetune stops at the start of the token instead.
      for (size_t i = 0; i < stop_ && i < chars.size() && chars[chars.size() - i - 1] == content_; ++i) {
        stop_cut = chars.size() - i - 1;
      }
      std::string out;
      for (size_t i = start_cut; i < stop_cut; ++i) utf8::append(out, chars[i]);
      token.swap(out);
    }
  }

 private:
  char32_t content_;
  size_t start_ = 0;
  size_t stop_ = 0;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(const JsonAt& spec) {
    JsonAt list = spec.at("decoders");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) steps_.push_back(make_decoder(list.at(i)));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const JsonAt& spec) {
  std::string type = spec.at("type").as_string();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Metaspace") return std::make_unique<Metaspace>(spec);
  if (type == "Replace") return std::make_unique<Replace>(spec);
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(spec);
  if (type == "Sequence") return std::make_unique<Sequence>(spec);
  spec.at("type").fail("decoder type \"", type, "\" is not supported (moetune implements ByteLevel, Metaspace, ",
                       "Replace, ByteFallback, Fuse, Strip, Sequence)");
}

}  // namespace moetune::tokenizer
