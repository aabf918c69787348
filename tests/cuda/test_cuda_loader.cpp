// Why: the streaming loader's GPU sink must put exactly the checkpoint's values (rounded once to bf16) at the layout's
// offsets, for both expert layouts, as the host path does.
#include <filesystem>

#include "../golden_fixture.h"
#include "api/model.h"
#include "cuda_test_util.h"
#include "gpu/gpu_trainer.h"

namespace moetune::testing {
namespace {

void check_gpu_load(const std::string& folder) {
  const Model host = Model::from_pretrained(folder);
  TrainOptions options;
  cuda::GpuTrainer trainer(host.config(), nullptr, options, {cuda::Recipe::MixedMaster, false, 0}, 1, 16);
  LoadOptions load;
  load.threads = 3;
  const LoadReport report = trainer.load_checkpoint(folder, load);
  EXPECT_EQ(report.bytes_read, report.bytes_total);
  const std::vector<float> loaded = trainer.download_params();  // the fp32 master = the loaded bf16 values
  ASSERT_EQ(loaded.size(), host.buffer_size());
  for (size_t i = 0; i < loaded.size(); ++i)
    ASSERT_EQ(loaded[i], bf16_to_f32(f32_to_bf16(host.params()[i]))) << folder << " element " << i;
}

TEST(CudaLoader, PerExpertCheckpointLandsAtTheLayoutOffsets) {
  SKIP_WITHOUT_GPU();
  check_gpu_load(GoldenFixture::open("mixtral").folder);
}

TEST(CudaLoader, FusedCheckpointLandsAtTheLayoutOffsets) {
  SKIP_WITHOUT_GPU();
  check_gpu_load(GoldenFixture::open("mixtral").folder + "/fused");
}

}  // namespace
}  // namespace moetune::testing
