// Why: see sentencepiece_model.h.
#include "tokenizer/sentencepiece_model.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

namespace {

// One protobuf message: a cursor over its bytes. Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
class Reader {
 public:
  Reader(std::string_view bytes, const std::string& path, const char* message)
      : bytes_(bytes), path_(path), message_(message) {}

  bool done() const { return at_ == bytes_.size(); }

  // The next field's number and wire type.
  std::pair<uint32_t, int> key() {
    const uint64_t key = varint();
    const auto field = static_cast<uint32_t>(key >> 3);
    const int wire = static_cast<int>(key & 7);
    if (field == 0 || (wire != 0 && wire != 1 && wire != 2 && wire != 5)) bad("a field key of wire type ", wire);
    return {field, wire};
  }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= bytes_.size()) bad("a varint that runs past the end");
      const auto byte = static_cast<unsigned char>(bytes_[at_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
    bad("a varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t length = varint();
    if (length > bytes_.size() - at_) bad("a length-delimited field of ", length, " bytes that runs past the end");
    std::string_view out = bytes_.substr(at_, length);
    at_ += length;
    return out;
  }
  float fixed32_float() {
    if (bytes_.size() - at_ < 4) bad("a 4-byte field that runs past the end");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(static_cast<unsigned char>(bytes_[at_ + i])) << (8 * i);
    at_ += 4;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }
  void skip(int wire) {
    if (wire == 0) varint();
    else if (wire == 2) bytes();
    else {
      const size_t width = wire == 1 ? 8 : 4;
      if (bytes_.size() - at_ < width) bad("a fixed-width field that runs past the end");
      at_ += width;
    }
  }
  void expect(int wire, int wanted, uint32_t field) {
    if (wire != wanted) bad("field ", field, " with wire type ", wire, " (expected ", wanted, ")");
  }
  std::string text(uint32_t field) {
    std::string_view value = bytes();
    if (!utf8::is_valid(value)) bad("field ", field, ", a string that is not valid UTF-8");
    return std::string(value);
  }
  int32_t int32() { return static_cast<int32_t>(static_cast<uint32_t>(varint())); }  // negatives are 10-byte varints

  template <class... Parts>
  [[noreturn]] void bad(Parts&&... parts) const {
    fail(path_, ": not a SentencePiece model (", message_, " at byte ", at_, ": ", std::forward<Parts>(parts)..., ")");
  }

 private:
  std::string_view bytes_;
  size_t at_ = 0;
  const std::string& path_;
  const char* message_;
};

SentencePieceModel::Piece read_piece(std::string_view bytes, const std::string& path) {
  Reader in(bytes, path, "ModelProto.pieces");
  SentencePieceModel::Piece piece;
  while (!in.done()) {
    auto [field, wire] = in.key();
    if (field == 1) {
      in.expect(wire, 2, field);
      piece.text = in.text(field);
    } else if (field == 2) {
      in.expect(wire, 5, field);
      piece.score = in.fixed32_float();
    } else if (field == 3) {
      in.expect(wire, 0, field);
      const uint64_t type = in.varint();
      if (type < 1 || type > 6) in.bad("piece type ", type);
      piece.type = static_cast<SentencePieceModel::PieceType>(type);
    } else {
      in.skip(wire);
    }
  }
  return piece;
}

void read_trainer_spec(std::string_view bytes, const std::string& path, SentencePieceModel& model) {
  Reader in(bytes, path, "ModelProto.trainer_spec");
  while (!in.done()) {
    auto [field, wire] = in.key();
    switch (field) {
      case 3: {
        in.expect(wire, 0, field);
        const uint64_t type = in.varint();
        if (type < 1 || type > 4) in.bad("model_type ", type);
        model.model_type = static_cast<SentencePieceModel::ModelType>(type);
        break;
      }
      case 35: in.expect(wire, 0, field); model.byte_fallback = in.varint() != 0; break;
      case 40: in.expect(wire, 0, field); model.unk_id = in.int32(); break;
      case 41: in.expect(wire, 0, field); model.bos_id = in.int32(); break;
      case 42: in.expect(wire, 0, field); model.eos_id = in.int32(); break;
      case 43: in.expect(wire, 0, field); model.pad_id = in.int32(); break;
      case 45: in.expect(wire, 2, field); model.unk_piece = in.text(field); break;
      case 46: in.expect(wire, 2, field); model.bos_piece = in.text(field); break;
      case 47: in.expect(wire, 2, field); model.eos_piece = in.text(field); break;
      case 48: in.expect(wire, 2, field); model.pad_piece = in.text(field); break;
      default: in.skip(wire);
    }
  }
}

void read_normalizer_spec(std::string_view bytes, const std::string& path, SentencePieceModel& model) {
  Reader in(bytes, path, "ModelProto.normalizer_spec");
  while (!in.done()) {
    auto [field, wire] = in.key();
    if (field == 1) {
      in.expect(wire, 2, field);
      model.normalizer_name = in.text(field);
    } else if (field == 2) {
      in.expect(wire, 2, field);
      model.precompiled_charsmap = std::string(in.bytes());
    } else {
      in.skip(wire);
    }
  }
}

}  // namespace

SentencePieceModel SentencePieceModel::parse(const std::string& bytes, const std::string& path) {
  SentencePieceModel model;
  Reader in(bytes, path, "ModelProto");
  while (!in.done()) {
    auto [field, wire] = in.key();
    if (field >= 1 && field <= 3) {
      in.expect(wire, 2, field);
      std::string_view message = in.bytes();
      if (field == 1) model.pieces.push_back(read_piece(message, path));
      else if (field == 2) read_trainer_spec(message, path, model);
      else read_normalizer_spec(message, path, model);
    } else {
      in.skip(wire);
    }
  }
  if (model.pieces.empty()) fail(path, ": not a SentencePiece model (no pieces)");
  return model;
}

SentencePieceModel SentencePieceModel::read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return parse(bytes.str(), path);
}

}  // namespace moetune::tokenizer
