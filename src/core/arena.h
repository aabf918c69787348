// Why: memory is planned, not discovered. Each lifetime class (parameters, gradients, optimizer state, activations,
// workspace) is one allocation carved into named pointers. Carving runs twice through the same code: once to measure
// (no memory, pointers stay null), once to hand out pointers into a single zeroed block of exactly that size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace moetune {

class Arena {
 public:
  // Measuring mode: take() records sizes and returns nullptr.
  Arena() = default;

  // Switches from measuring to handing out memory: allocates one zeroed block of the measured size, rewinds.
  void allocate_measured();
  // Rewinds so the same carving sequence hands out the same pointers again.
  void rewind() { used_ = 0; }

  template <class T>
  T* take(size_t count) {
    const size_t begin = (used_ + kAlignment - 1) / kAlignment * kAlignment;
    used_ = begin + count * sizeof(T);
    if (!block_) {
      measured_ = used_ > measured_ ? used_ : measured_;
      return nullptr;
    }
    return reinterpret_cast<T*>(block_.get() + begin);
  }

  size_t bytes() const { return measured_; }
  bool allocated() const { return block_ != nullptr; }
  void zero();

 private:
  static constexpr size_t kAlignment = 64;
  std::unique_ptr<unsigned char[]> block_;
  size_t used_ = 0;
  size_t measured_ = 0;
};

}  // namespace moetune
