// Why: Transformers converts a SentencePiece tokenizer.model into a `tokenizers` tokenizer from the model's protobuf
// fields: the pieces (text, score, type), the trainer's model type, byte_fallback and special pieces, and the
// normalizer's precompiled_charsmap (sentencepiece_conversion.h). libsentencepiece's processor API hides the model
// type, byte_fallback, the user-defined type and the charsmap, and moetune never runs SentencePiece's own segmentation
// (Transformers 5 does not either), so this reads the fields straight from the file: a small reader of the protobuf
// wire format for the ModelProto messages of sentencepiece_model.proto (field numbers below), unknown fields skipped
// as protobuf does, proto2 defaults where a field is absent. A file that is not such a protobuf is an error naming it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetune::tokenizer {

struct SentencePieceModel {
  enum class PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
  enum class ModelType { Unigram = 1, Bpe = 2, Word = 3, Char = 4 };

  struct Piece {
    std::string text;  // ModelProto.pieces[i].piece (1), UTF-8
    float score = 0;   // .score (2)
    PieceType type = PieceType::Normal;  // .type (3)
  };

  std::vector<Piece> pieces;  // ModelProto.pieces (1); the index is the token id
  // ModelProto.trainer_spec (2)
  ModelType model_type = ModelType::Unigram;  // (3)
  bool byte_fallback = false;                 // (35)
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;                                 // (40..43)
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";  // (45..48)
  // ModelProto.normalizer_spec (3)
  std::string normalizer_name;       // (1), e.g. "identity", "nmt_nfkc"
  std::string precompiled_charsmap;  // (2), bytes; empty for identity normalization

  // Reads a tokenizer.model file; `path` names it in errors.
  static SentencePieceModel read(const std::string& path);
  static SentencePieceModel parse(const std::string& bytes, const std::string& path);
};

}  // namespace moetune::tokenizer
