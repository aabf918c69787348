// Why: see arena.h. The block is value-initialised (zeroed) so gradients and optimizer state start at exactly 0.
#include "core/arena.h"

#include <cstring>

#include "core/error.h"

namespace moetune {

void Arena::allocate_measured() {
  MT_ASSERT(!block_);
  block_ = std::make_unique<unsigned char[]>(measured_ == 0 ? 1 : measured_);
  used_ = 0;
}

void Arena::zero() {
  if (block_) std::memset(block_.get(), 0, measured_);
}

}  // namespace moetune
