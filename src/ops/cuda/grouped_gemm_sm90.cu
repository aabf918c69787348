// Why: see grouped_gemm_sm90.h. Three CUTLASS kernels, one per layout (operand majorness differs, so they are distinct
// instantiations); kept to three because each SM90 instantiation costs minutes of compile time on CI's two cores.
// Problem shapes live only on the device (the host passes no per-expert sizes), so CUTLASS's persistent group tile
// scheduler walks the experts' tiles itself and no host synchronisation is needed.
//
// Mapping to CUTLASS's D (M, N) = A (M, K) · B (K, N) per expert e with r_e = expert_offsets[e+1] - expert_offsets[e]:
//   kNT  M = r_e,    N = c_cols, K = a_cols   A row-major (K contiguous), B = W[e] (N, K) row-major -> "column-major"
//   kNN  M = r_e,    N = c_cols, K = a_cols   A row-major, B = W[e] (K, N) row-major (N contiguous)
//   kTN  M = a_cols, N = c_cols, K = r_e      A = A_e^T: A_e (K, M) row-major -> column-major, B = B_e (K, N) row-major
// kNT/kNN write D without reading it (CUTLASS's void source); kTN reads C[e] as the source with beta = 1. kTNWrite runs
// kTN's kernel with beta = 0, which CUTLASS's epilogue takes as "no source": C is not read. An expert with r_e = 0 gets
// M = 0 in every layout (no tiles: nothing is read or written for it); for kTNWrite a small kernel zeroes its C[e].
#include "ops/cuda/grouped_gemm_sm90.h"

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "ops/cuda/device_buffer.h"

#if !defined(CUTLASS_ARCH_MMA_MODIFIABLE_TMA_SM90_SUPPORTED)
#error "grouped_gemm_sm90.cu needs sm_90a and CUDA >= 12.3 (CUTLASS_ARCH_MMA_MODIFIABLE_TMA_SM90_SUPPORTED)"
#endif

namespace moetune::cuda {
namespace {

using namespace cute;
using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per expert
using Shape3 = ProblemShape::UnderlyingProblemShape;
using Element = cutlass::bfloat16_t;
constexpr int kAlignment = 8;  // elements per 16 bytes

void check_cutlass(cutlass::Status status, const char* call, const char* file, int line) {
  if (status != cutlass::Status::kSuccess)
    fail(file, ":", line, ": ", call, " failed: ", cutlass::cutlassGetStatusString(status));
}
#define CUTLASS_CHECK(call) check_cutlass((call), #call, __FILE__, __LINE__)

// One grouped kernel: operand layouts, the source type of the epilogue (void: D is written without reading it) and
// the schedule; no clusters (tiles of different experts never share operands).
//   Cooperative (kNT, kNN): two consumer warpgroups share a 128 x 256 tile, one producer warp issues the TMA loads.
//   Ping-pong (kTN): each consumer warpgroup owns a 128 x 128 tile and one's epilogue runs while the other's MMAs do.
//   A weight gradient's reduction is one expert's rows (~256 on Qwen3-30B-A3B: four K-steps), so its epilogue (which
//   stops a cooperative tile's MMAs) is a large share of each tile.
struct Cooperative {
  using TileShape = Shape<_128, _256, _64>;
  using EpilogueSchedule = cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative;
  using MainloopSchedule = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
};
struct PingPong {
  using TileShape = Shape<_128, _128, _64>;
  using EpilogueSchedule = cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong;
  using MainloopSchedule = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong;
};

template <class LayoutA, class LayoutB, class ElementSource, class Schedule>
struct GroupedKernel {
  using TileShape = typename Schedule::TileShape;
  using ClusterShape = Shape<_1, _1, _1>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementSource, cutlass::layout::RowMajor*,
      kAlignment, Element, cutlass::layout::RowMajor*, kAlignment, typename Schedule::EpilogueSchedule,
      cutlass::epilogue::fusion::LinearCombination<Element, float, ElementSource, float>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, LayoutA*, kAlignment, Element, LayoutB*, kAlignment,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      typename Schedule::MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideC = typename Kernel::InternalStrideC;
  using StrideD = typename Kernel::InternalStrideD;
};

using ForwardKernel = GroupedKernel<cutlass::layout::RowMajor, cutlass::layout::ColumnMajor, void, Cooperative>;  // kNT
using DataGradKernel = GroupedKernel<cutlass::layout::RowMajor, cutlass::layout::RowMajor, void, Cooperative>;    // kNN
using WeightGradKernel =
    GroupedKernel<cutlass::layout::ColumnMajor, cutlass::layout::RowMajor, Element, PingPong>;  // kTN, kTNWrite

// A packed stride of CuTe's (rows, cols, batch) form in which exactly one of the first two modes is dynamic (the
// leading dimension); the other is 1 and the batch mode 0.
template <class Stride>
__device__ Stride leading_stride(int64_t leading) {
  Stride stride{};
  if constexpr (cute::is_same_v<cute::remove_cvref_t<decltype(cute::get<0>(stride))>, int64_t>)
    cute::get<0>(stride) = leading;
  else
    cute::get<1>(stride) = leading;
  return stride;
}

// The per-expert argument tables of one kernel (device memory, experts entries each).
template <class K>
struct Tables {
  DeviceBuffer<Shape3> shapes;
  DeviceBuffer<const Element*> a, b;
  DeviceBuffer<Element*> d;
  DeviceBuffer<const Element*> c;  // kTN's source (= d); unused otherwise
  DeviceBuffer<typename K::StrideA> stride_a;
  DeviceBuffer<typename K::StrideB> stride_b;
  DeviceBuffer<typename K::StrideC> stride_c;
  DeviceBuffer<typename K::StrideD> stride_d;
  explicit Tables(int experts)
      : shapes(experts), a(experts), b(experts), d(experts), c(experts), stride_a(experts), stride_b(experts),
        stride_c(experts), stride_d(experts) {}
};

template <class K>
struct TablePointers {
  Shape3* shapes;
  const Element** a;
  const Element** b;
  Element** d;
  const Element** c;
  typename K::StrideA* stride_a;
  typename K::StrideB* stride_b;
  typename K::StrideC* stride_c;
  typename K::StrideD* stride_d;
};

template <class K>
TablePointers<K> pointers(Tables<K>& t) {
  return {t.shapes.data(), t.a.data(), t.b.data(), t.d.data(), t.c.data(),
          t.stride_a.data(), t.stride_b.data(), t.stride_c.data(), t.stride_d.data()};
}

// One thread per expert: its (M, N, K), operand pointers and strides (see the mapping at the top of the file).
template <class K>
__global__ void fill_tables_kernel(TablePointers<K> t, GroupedLayout layout, const int32_t* offsets, int experts,
                                   int a_cols, int c_cols, const Element* A, const Element* B, Element* C) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= experts) return;
  const int64_t begin = offsets[e];
  const int rows = offsets[e + 1] - offsets[e];
  const int64_t weight = static_cast<int64_t>(a_cols) * c_cols;
  if (layout == GroupedLayout::kTN || layout == GroupedLayout::kTNWrite) {
    t.shapes[e] = Shape3(rows > 0 ? a_cols : 0, c_cols, rows);
    t.a[e] = A + begin * a_cols;
    t.b[e] = B + begin * c_cols;
    t.d[e] = C + e * weight;
    t.c[e] = C + e * weight;
    t.stride_b[e] = leading_stride<typename K::StrideB>(c_cols);
  } else {
    t.shapes[e] = Shape3(rows, c_cols, a_cols);
    t.a[e] = A + begin * a_cols;
    t.b[e] = B + e * weight;
    t.d[e] = C + begin * c_cols;
    t.c[e] = nullptr;
    t.stride_b[e] = leading_stride<typename K::StrideB>(layout == GroupedLayout::kNT ? a_cols : c_cols);
  }
  t.stride_a[e] = leading_stride<typename K::StrideA>(a_cols);
  t.stride_c[e] = leading_stride<typename K::StrideC>(c_cols);
  t.stride_d[e] = leading_stride<typename K::StrideD>(c_cols);
}

template <class K>
typename K::Gemm::Arguments make_arguments(TablePointers<K> t, int experts, float beta,
                                           const cutlass::KernelHardwareInfo& hardware) {
  typename K::Gemm::Arguments arguments{cutlass::gemm::GemmUniversalMode::kGrouped,
                                        {experts, t.shapes, nullptr},
                                        {t.a, t.stride_a, t.b, t.stride_b},
                                        {{}, nullptr, t.stride_c, t.d, t.stride_d},
                                        hardware};
  arguments.epilogue.thread.alpha = 1.0f;
  arguments.epilogue.thread.beta = beta;
  if constexpr (!cute::is_void_v<typename K::Epilogue::ElementC>) arguments.epilogue.ptr_C = t.c;
  return arguments;
}

// One layout's kernel, its tables and CUTLASS's workspace.
template <class K>
struct Runner {
  Tables<K> tables;
  typename K::Gemm gemm;
  DeviceBuffer<uint8_t> workspace;
  cutlass::KernelHardwareInfo hardware;
  float beta;

  Runner(int max_experts, float beta_value, int device) : tables(max_experts), beta(beta_value) {
    hardware = cutlass::KernelHardwareInfo::make_kernel_hardware_info<typename K::Kernel>(device);
    const size_t bytes = K::Gemm::get_workspace_size(make_arguments<K>(pointers(tables), max_experts, beta, hardware));
    workspace = DeviceBuffer<uint8_t>(std::max<size_t>(bytes, 1));
  }

  void run(GroupedLayout layout, const int32_t* offsets, int experts, int a_cols, int c_cols, const bf16* A,
           const bf16* B, bf16* C, cudaStream_t stream) {
    const TablePointers<K> t = pointers(tables);
    constexpr int kThreads = 128;
    fill_tables_kernel<K><<<(experts + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        t, layout, offsets, experts, a_cols, c_cols, reinterpret_cast<const Element*>(A),
        reinterpret_cast<const Element*>(B), reinterpret_cast<Element*>(C));
    CUDA_CHECK_LAUNCH("fill_tables_kernel");
    const typename K::Gemm::Arguments arguments = make_arguments<K>(t, experts, beta, hardware);
    CUTLASS_CHECK(gemm.can_implement(arguments));
    CUTLASS_CHECK(gemm.initialize(arguments, workspace.data(), stream));
    CUTLASS_CHECK(gemm.run(stream));
  }
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// kTNWrite's experts with no rows: C[e] (weight_elements, a multiple of 8) becomes zeros. Grid (chunks, experts); the
// blocks of an expert with rows return at once.
constexpr int kZeroThreads = 256;
constexpr int kZeroBlocksPerExpert = 64;
__global__ void zero_empty_experts_kernel(bf16* C, const int32_t* offsets, int64_t weight_elements) {
  const int e = blockIdx.y;
  if (offsets[e + 1] != offsets[e]) return;
  uint4* dst = reinterpret_cast<uint4*>(C + e * weight_elements);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kZeroThreads) + threadIdx.x; i < weight_elements / 8;
       i += static_cast<int64_t>(gridDim.x) * kZeroThreads)
    dst[i] = make_uint4(0, 0, 0, 0);
}

}  // namespace

struct Sm90GroupedGemm::Impl {
  int max_experts;
  Runner<ForwardKernel> forward;
  Runner<DataGradKernel> data_grad;
  Runner<WeightGradKernel> weight_grad;        // kTN: beta = 1
  Runner<WeightGradKernel> weight_grad_write;  // kTNWrite: the same kernel with beta = 0 (its own tables)
  Impl(int experts, int device)
      : max_experts(experts), forward(experts, 0.0f, device), data_grad(experts, 0.0f, device),
        weight_grad(experts, 1.0f, device), weight_grad_write(experts, 0.0f, device) {}
};

namespace {
int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}
}  // namespace

Sm90GroupedGemm::Sm90GroupedGemm(int max_experts) {
  if (max_experts < 1 || max_experts > kGroupedGemmMaxExperts)
    fail("Sm90GroupedGemm: max_experts = ", max_experts, ", expected 1..", kGroupedGemmMaxExperts);
  impl_ = std::make_unique<Impl>(max_experts, current_device());
}

Sm90GroupedGemm::~Sm90GroupedGemm() = default;

void Sm90GroupedGemm::run(GroupedLayout layout, const int32_t* expert_offsets, int experts, int a_cols, int c_cols,
                          const bf16* A, const bf16* B, bf16* C, cudaStream_t stream) {
  if (experts < 1 || experts > impl_->max_experts)
    fail("Sm90GroupedGemm: experts = ", experts, ", expected 1..", impl_->max_experts);
  if (a_cols <= 0 || c_cols <= 0 || a_cols % kGroupedGemmDimMultiple || c_cols % kGroupedGemmDimMultiple)
    fail("Sm90GroupedGemm: a_cols = ", a_cols, ", c_cols = ", c_cols, ": both must be positive multiples of ",
         kGroupedGemmDimMultiple);
  if (!expert_offsets || !aligned16(A) || !aligned16(B) || !aligned16(C))
    fail("Sm90GroupedGemm: expert_offsets must be non-null and A, B, C 16-byte aligned");
  switch (layout) {
    case GroupedLayout::kNT:
      impl_->forward.run(layout, expert_offsets, experts, a_cols, c_cols, A, B, C, stream);
      break;
    case GroupedLayout::kNN:
      impl_->data_grad.run(layout, expert_offsets, experts, a_cols, c_cols, A, B, C, stream);
      break;
    case GroupedLayout::kTN:
      impl_->weight_grad.run(layout, expert_offsets, experts, a_cols, c_cols, A, B, C, stream);
      break;
    case GroupedLayout::kTNWrite:
      zero_empty_experts_kernel<<<dim3(kZeroBlocksPerExpert, experts), kZeroThreads, 0, stream>>>(
          C, expert_offsets, static_cast<int64_t>(a_cols) * c_cols);
      CUDA_CHECK_LAUNCH("zero_empty_experts_kernel");
      impl_->weight_grad_write.run(layout, expert_offsets, experts, a_cols, c_cols, A, B, C, stream);
      break;
  }
}

}  // namespace moetune::cuda
