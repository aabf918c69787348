// Why: per-layer activation recompute (GpuEngineOptions::recompute) must change the memory, not the math. The backward
// of a layer re-runs the same kernels on the same inputs, so with recompute on, every family's losses and every
// parameter gradient must equal recompute off's bit for bit (two runs into one accumulating gradient buffer, so state
// left over from one run would show in the next). The memory plan must keep one layer's activations plus the L layer
// inputs: checked exactly on the host (no GPU needed) and against what the engine allocates.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "cuda_test_util.h"
#include "gpu/gpu_engine.h"
#include "model/geometries.h"
#include "tiny_models.h"

namespace moetune::testing {
namespace {

// All gradients in one zeroed bf16 buffer of the parameter layout, kept across runs.
class ArenaSink : public cuda::GradientSink {
 public:
  explicit ArenaSink(const ParamLayout& layout) : grads_(layout.total_floats()) {
    grads_.zero();
    view_ = cuda::as_bf16(layout.bind16(reinterpret_cast<uint16_t*>(grads_.data())));
  }
  const cuda::GpuWeights& begin_group(int) override { return view_; }
  void end_group(int) override {}
  std::vector<uint16_t> download() const {
    const std::vector<cuda::bf16> raw = grads_.download();
    std::vector<uint16_t> bits(raw.size());
    std::memcpy(bits.data(), raw.data(), raw.size() * sizeof(uint16_t));
    return bits;
  }

 private:
  cuda::DeviceBuffer<cuda::bf16> grads_;
  cuda::GpuWeights view_;
};

struct Outcome {
  std::vector<cuda::GpuLoss> losses;  // one per run
  std::vector<uint16_t> grads;        // bf16 bits, layout order, after all runs
  size_t activation_bytes = 0, workspace_bytes = 0;
};

Outcome train_runs(const ModelConfig& config, const Model& model, const std::vector<Batch>& batches, bool recompute) {
  const ParamLayout layout(config);
  std::vector<cuda::bf16> host(layout.total_floats());
  for (size_t i = 0; i < host.size(); ++i) host[i] = __float2bfloat16(model.params()[i]);
  cuda::DeviceBuffer<cuda::bf16> params(host);
  const cuda::GpuWeights weights = cuda::as_bf16(layout.bind16(reinterpret_cast<uint16_t*>(params.data())));
  ArenaSink sink(layout);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreate(&stream));
  Outcome outcome;
  {
    cuda::GpuEngineOptions options;
    options.recompute = recompute;
    cuda::GpuEngine engine(config, batches[0].batch_size, batches[0].seq_len, stream, options);
    EXPECT_EQ(engine.recompute(), recompute);
    for (const Batch& batch : batches) {
      engine.set_batch(batch.input_ids.data(), batch.labels.data());
      engine.run(weights, &sink, 1.0f / 100.0f, config.router_aux_loss_coef);
      outcome.losses.push_back(engine.loss());
    }
    outcome.activation_bytes = engine.activation_bytes();
    outcome.workspace_bytes = engine.workspace_bytes();
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaStreamDestroy(stream));
  outcome.grads = sink.download();
  return outcome;
}

class CudaEngineRecompute : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaEngineRecompute, LossesAndGradientsAreBitIdentical) {
  SKIP_WITHOUT_GPU();
  const ModelConfig config = parse_config(tiny_json(GetParam()), "test config " + GetParam());
  const Model model = bf16_model(config, 21);
  const std::vector<Batch> batches = {random_batch(2, 64, config.vocab_size, 22), random_batch(2, 64, config.vocab_size, 23)};
  const Outcome off = train_runs(config, model, batches, false);
  const Outcome on = train_runs(config, model, batches, true);
  for (size_t r = 0; r < batches.size(); ++r) {
    EXPECT_EQ(on.losses[r].ce_sum, off.losses[r].ce_sum) << "run " << r;
    EXPECT_EQ(on.losses[r].aux, off.losses[r].aux) << "run " << r;
    EXPECT_EQ(on.losses[r].counted, off.losses[r].counted) << "run " << r;
  }
  EXPECT_EQ(first_difference(on.grads, off.grads), -1) << "first differing gradient element";
  bool any_nonzero = false;
  for (uint16_t bits : off.grads) any_nonzero |= (bits & 0x7fff) != 0;
  EXPECT_TRUE(any_nonzero);

  EXPECT_LT(on.activation_bytes, off.activation_bytes);
  EXPECT_EQ(on.workspace_bytes, off.workspace_bytes);
  const cuda::GpuMemoryPlan plan_on = cuda::GpuEngine::plan(config, 2, 64, {cuda::GroupedGemmBackend::Moetune, true});
  const cuda::GpuMemoryPlan plan_off = cuda::GpuEngine::plan(config, 2, 64, {cuda::GroupedGemmBackend::Moetune, false});
  EXPECT_EQ(on.activation_bytes, plan_on.activation_bytes);
  EXPECT_EQ(on.workspace_bytes, plan_on.workspace_bytes);
  EXPECT_EQ(off.activation_bytes, plan_off.activation_bytes);
  EXPECT_EQ(off.workspace_bytes, plan_off.workspace_bytes);
}

INSTANTIATE_TEST_SUITE_P(Families, CudaEngineRecompute,
                         ::testing::Values("qwen3_moe", "mixtral", "olmoe", "qwen2_moe", "olmoe_clip", "mixtral_wide"));

ModelConfig with_layers(const std::string& family, int layers) {
  nlohmann::json j = tiny_json(family);
  j["num_hidden_layers"] = layers;
  return parse_config(j, "test config " + family);
}

size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Host arithmetic only: runs without a GPU. With recompute, adding layers adds only their inputs (N, H) bf16; without,
// it adds whole layers; the shared set of recompute is one layer's activations. On moetune's grouped GEMMs (without
// expert parallelism) a layer keeps none of its expert rows (Layer::expert_in), which cuBLAS's experts keep.
TEST(CudaEnginePlan, RecomputeKeepsOneLayerPlusTheLayerInputs) {
  const int batch = 2, seq = 64;
  const cuda::GpuEngineOptions off{cuda::GroupedGemmBackend::Moetune, false}, on{cuda::GroupedGemmBackend::Moetune, true},
      cublas{cuda::GroupedGemmBackend::Cublas, false};
  for (const std::string family : {"olmoe", "olmoe_clip", "mixtral", "mixtral_wide"}) {  // every layer sparse
    SCOPED_TRACE(family);
    const bool own_gemms = family == "mixtral_wide";  // the others' widths are not multiples of 64: cuBLAS's experts
    const ModelConfig two = with_layers(family, 2), five = with_layers(family, 5);
    const size_t input_bytes = aligned(size_t(batch) * seq * two.hidden_size * sizeof(uint16_t));
    const cuda::GpuMemoryPlan off2 = cuda::GpuEngine::plan(two, batch, seq, off), on2 = cuda::GpuEngine::plan(two, batch, seq, on);
    const cuda::GpuMemoryPlan off5 = cuda::GpuEngine::plan(five, batch, seq, off), on5 = cuda::GpuEngine::plan(five, batch, seq, on);
    const cuda::GpuMemoryPlan cublas2 = cuda::GpuEngine::plan(two, batch, seq, cublas),
                              cublas5 = cuda::GpuEngine::plan(five, batch, seq, cublas);
    // off_n = C + n (input + F) and on_n = C + n input + S: F is a layer's activations but its input, S the shared set.
    const size_t layer_rest = (off5.activation_bytes - off2.activation_bytes) / 3 - input_bytes;
    EXPECT_EQ(off5.activation_bytes - off2.activation_bytes, 3 * (input_bytes + layer_rest));
    const size_t common = off2.activation_bytes - 2 * (input_bytes + layer_rest);
    EXPECT_EQ(on2.activation_bytes - common - 2 * input_bytes, layer_rest);
    EXPECT_EQ(on5.activation_bytes - on2.activation_bytes, 3 * input_bytes);
    EXPECT_EQ(on5.workspace_bytes, off5.workspace_bytes);
    // cuBLAS's experts keep the gathered rows (N k, H), the outputs (N k, H) and the activation (N k, I) per layer.
    const size_t rows = size_t(batch) * seq * two.top_k, H = two.hidden_size, I = two.moe_intermediate_size;
    const size_t kept_rows = 2 * aligned(rows * H * sizeof(uint16_t)) + aligned(rows * I * sizeof(uint16_t));
    EXPECT_EQ((cublas5.activation_bytes - cublas2.activation_bytes) - (off5.activation_bytes - off2.activation_bytes),
              own_gemms ? 3 * kept_rows : 0);
  }
  for (const std::string family : {"qwen3_moe", "qwen2_moe"}) {  // a dense layer and sparse ones: one shared set of both
    SCOPED_TRACE(family);
    const ModelConfig three = with_layers(family, 3), six = with_layers(family, 6);
    const size_t input_bytes = aligned(size_t(batch) * seq * three.hidden_size * sizeof(uint16_t));
    const cuda::GpuMemoryPlan off3 = cuda::GpuEngine::plan(three, batch, seq, off), on3 = cuda::GpuEngine::plan(three, batch, seq, on);
    const cuda::GpuMemoryPlan on6 = cuda::GpuEngine::plan(six, batch, seq, on);
    EXPECT_LT(on3.activation_bytes, off3.activation_bytes);
    EXPECT_EQ(on6.activation_bytes - on3.activation_bytes, 3 * input_bytes);
    EXPECT_EQ(on3.workspace_bytes, off3.workspace_bytes);
  }
  // The benchmark geometry, for the record.
  const ModelConfig slice = named_geometry("qwen3-30b-a3b-slice");
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const cuda::GpuMemoryPlan slice_off = cuda::GpuEngine::plan(slice, 1, 4096, off), slice_on = cuda::GpuEngine::plan(slice, 1, 4096, on);
  std::printf("[plan] %s seq 4096: activations %.2f GiB, with recompute %.2f GiB (workspace %.2f GiB)\n",
              slice.architecture.c_str(), slice_off.activation_bytes / gib, slice_on.activation_bytes / gib,
              slice_off.workspace_bytes / gib);
  EXPECT_LT(slice_on.activation_bytes, slice_off.activation_bytes);
}

}  // namespace
}  // namespace moetune::testing
