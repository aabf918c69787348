// Why: the GPU's packed attention trusts the document offsets it is given (it cannot check them without a host
// synchronisation), so the host conversion from doc_start must be exact and must refuse a doc_start that is not a list
// of contiguous documents rather than hand the kernel a different mask than the CPU engine applies.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/cpu/document_offsets.h"

namespace moetune {
namespace {

TEST(DocumentOffsets, RowsOfDocumentsAndPaddingTails) {
  // Row 0: documents of 1, 3 and 2 tokens, then a 2-token tail; row 1: one document; row 2: 1, 1, then a tail of 6.
  const std::vector<int32_t> doc_start = {0, 1, 1, 1, 4, 4, 6, 6,  //
                                          0, 0, 0, 0, 0, 0, 0, 0,  //
                                          0, 1, 2, 2, 2, 2, 2, 2};
  const std::vector<int32_t> expected = {0, 1, 4, 6, 8, 16, 17, 18, 24};
  EXPECT_EQ(cpu::document_offsets(doc_start.data(), 3, 8), expected);
}

TEST(DocumentOffsets, UnpackedRowsAreOneDocumentEach) {
  const std::vector<int32_t> doc_start(2 * 5, 0);
  EXPECT_EQ(cpu::document_offsets(doc_start.data(), 2, 5), (std::vector<int32_t>{0, 5, 10}));
}

TEST(DocumentOffsets, EveryTokenItsOwnDocument) {
  const std::vector<int32_t> doc_start = {0, 1, 2, 0, 1, 2};
  EXPECT_EQ(cpu::document_offsets(doc_start.data(), 2, 3), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(DocumentOffsets, RejectsStartsThatAreNotContiguousDocuments) {
  // Token 3 returns to a document that token 2 had left.
  const std::vector<int32_t> interleaved = {0, 0, 2, 0};
  try {
    cpu::document_offsets(interleaved.data(), 1, 4);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("token 3 of row 0"), std::string::npos) << error.what();
  }
  // Token 2 starts a document at 1 that token 1 did not open.
  const std::vector<int32_t> late = {0, 0, 1, 1};
  EXPECT_THROW(cpu::document_offsets(late.data(), 1, 4), Error);
  // A row's first token must open a document (doc_start 0), even in a later row.
  const std::vector<int32_t> second_row = {0, 0, 1, 1};
  EXPECT_THROW(cpu::document_offsets(second_row.data(), 2, 2), Error);
}

}  // namespace
}  // namespace moetune
