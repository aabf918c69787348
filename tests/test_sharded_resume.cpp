// Why: a rank of an expert-parallel run resumes by reading only its part of a checkpoint (its experts' weights and
// moments and every replicated tensor) straight into its own layout (train/train_state.h read_checkpoint_values), so
// that no rank holds the whole model. That part must be exactly what cutting the rank's slice out of the full arenas
// gives (cli::slice_to_shard, the CLI's own cut of a full arena): for every rank of EP 1, 2 and 4, models with a dense
// layer, shared experts and Mixtral's names, weights in either expert layout, in one file or in shards. The bytes read
// must be the rank's own (12 per held parameter), and a checkpoint with a fault anywhere — in a tensor of an expert no
// rank asking holds too — must still fail as it did, naming the file and the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "api/model.h"
#include "cli/rank_slices.h"
#include "ep_test_models.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "parallel/expert_shard.h"
#include "test_util.h"
#include "train/train_state.h"

namespace moetune::testing {
namespace {

namespace fs = std::filesystem;
using test_util::error_of;
using test_util::TempFolder;

constexpr long kStep = 5;

// The full-layout arenas of a checkpoint: distinct random values everywhere, so that an element read from the wrong
// offset, tensor or arena shows.
// How the weights of the checkpoint are stored (its moments are always one trainer_state.safetensors).
struct WeightFiles {
  ExpertLayout layout = ExpertLayout::PerExpert;
  bool shards = false;  // model-0000i-of-0000N.safetensors + index
  std::string name() const {
    return std::string(layout == ExpertLayout::Fused ? "fused" : "per-expert") + (shards ? " sharded" : " one file");
  }
};

// A training checkpoint of step kStep holding `full`, as moetune writes it (per expert, one file), with its weights
// then replaced by the same values stored as `files` says (what a checkpoint from elsewhere may hold). Returns the step
// folder.
std::string write_full_checkpoint(const TempFolder& temp, const ModelConfig& config, const FullArenas& full,
                                  const WeightFiles& files) {
  CheckpointRecord record;
  record.batch_size = 2;
  record.seq_len = 8;
  record.sampler.dataset_size = 10;
  const size_t floats = full.params.size();
  const std::vector<HeldRun> held = {{SourceArena::Params, 0, floats, full.params.data()},
                                     {SourceArena::ExpAvg, 0, floats, full.exp_avg.data()},
                                     {SourceArena::ExpAvgSq, 0, floats, full.exp_avg_sq.data()}};
  const std::string folder =
      write_checkpoint(temp.file("checkpoints"), config, held, kStep, record, CheckpointWriteOptions{}, SaveRanks{});
  if (files.layout == ExpertLayout::PerExpert && !files.shards) return folder;
  SaveOptions options;
  options.expert_layout = files.layout;
  if (files.shards) options.max_shard_bytes = ParamLayout(config).parameter_count();  // a quarter of the f32 bytes
  const std::string weights = temp.file("weights");
  save_hf_checkpoint(weights, config, ParamLayout(config), full.params.data(), options);
  fs::remove(folder + "/model.safetensors");
  int copied = 0;
  for (const auto& entry : fs::directory_iterator(weights)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("model", 0) != 0) continue;
    fs::copy_file(entry.path(), folder + "/" + name);
    ++copied;
  }
  EXPECT_EQ(copied > 2, files.shards) << "sharded weights are several files and an index";
  return folder;
}

const std::vector<WeightFiles> kWeightFiles = {{ExpertLayout::PerExpert, false},
                                               {ExpertLayout::PerExpert, true},
                                               {ExpertLayout::Fused, false},
                                               {ExpertLayout::Fused, true}};

TEST(ShardedResume, EveryRankReadsExactlyItsSliceOfTheFullArenas) {
  for (const ModelConfig& config : eight_expert_configs()) {
    const FullArenas full = random_full_arenas(config);
    for (const WeightFiles& files : kWeightFiles) {
      SCOPED_TRACE(config.architecture + " " + files.name());
      TempFolder temp;
      const CheckpointInfo checkpoint = open_checkpoint(write_full_checkpoint(temp, config, full, files));
      EXPECT_EQ(checkpoint.record.step, kStep);
      for (const int ep : {1, 2, 4}) {
        const int per = config.num_experts / ep;
        for (int q = 0; q < ep; ++q) {
          SCOPED_TRACE("EP rank " + std::to_string(q) + " of " + std::to_string(ep));
          const ModelConfig& whole = checkpoint.config;
          const ModelConfig held = ep == 1 ? whole : parallel::expert_shard_config(whole, q * per, per);
          LoadOptions options;
          options.progress = false;
          options.threads = 3;
          LoadReport report;
          const CheckpointValues values = read_checkpoint_values(checkpoint, held, options, &report);

          const std::vector<cli::ShardRun> runs = cli::shard_runs(config, held);
          const size_t size = ParamLayout(held).total_floats();
          EXPECT_TRUE(values.params == cli::slice_to_shard(runs, full.params.data(), size)) << "weights";
          EXPECT_TRUE(values.state.exp_avg == cli::slice_to_shard(runs, full.exp_avg.data(), size)) << "exp_avg";
          EXPECT_TRUE(values.state.exp_avg_sq == cli::slice_to_shard(runs, full.exp_avg_sq.data(), size))
              << "exp_avg_sq";
          EXPECT_EQ(values.state.step, kStep);
          // Only the rank's own values were read: 4 bytes of weights and 8 of moments per parameter it holds.
          EXPECT_EQ(report.bytes_read, 12 * ParamLayout(held).parameter_count());
          EXPECT_EQ(report.bytes_total, 12 * ParamLayout(config).parameter_count());
        }
      }
    }
  }
}

TEST(ShardedResume, LoadCheckpointIsEverythingInTheFullLayout) {
  const ModelConfig config = eight_expert_configs()[1];  // Qwen2-MoE: shared experts
  const FullArenas full = random_full_arenas(config);
  for (const WeightFiles& files : kWeightFiles) {
    SCOPED_TRACE(files.name());
    TempFolder temp;
    const std::string folder = write_full_checkpoint(temp, config, full, files);
    const LoadedCheckpoint loaded = load_checkpoint(folder);
    EXPECT_EQ(loaded.folder, folder);
    EXPECT_EQ(loaded.model.source_folder(), folder);
    ASSERT_EQ(loaded.model.buffer_size(), full.params.size());
    EXPECT_TRUE(std::equal(full.params.begin(), full.params.end(), loaded.model.params()));
    EXPECT_TRUE(loaded.state.exp_avg == full.exp_avg);
    EXPECT_TRUE(loaded.state.exp_avg_sq == full.exp_avg_sq);
    EXPECT_EQ(loaded.state.step, kStep);
    // The moments alone, for a layout.
    const TrainState state = read_train_state(folder, loaded.model.layout(), kStep);
    EXPECT_TRUE(state.exp_avg == full.exp_avg);
    EXPECT_TRUE(state.exp_avg_sq == full.exp_avg_sq);
  }
}

// --- faults: found when the checkpoint is opened, whatever part of it is then read -----------------------------------

class ShardedResumeFaults : public ::testing::Test {
 protected:
  void SetUp() override { folder_ = write_full_checkpoint(temp_, config_, full_, {}); }
  std::string file(const char* name) const { return folder_ + "/" + name; }
  // Rank 0 of EP 4 (experts 0 and 1): expert 7, where the faults below are, is not its own.
  ModelConfig rank0_of_four() const { return parallel::expert_shard_config(config_, 0, 2); }
  std::string open_and_read_rank0() {
    return error_of([&] { read_checkpoint_values(open_checkpoint(folder_), rank0_of_four()); });
  }

  ModelConfig config_ = builtin_tiny_config();
  FullArenas full_ = random_full_arenas(config_);
  TempFolder temp_;
  std::string folder_;
};

TEST_F(ShardedResumeFaults, AMissingWeightOfAnotherRanksExpert) {
  const std::string name = "model.layers.1.mlp.experts.7.down_proj.weight";
  bool found = false;
  test_util::rewrite_safetensors(file("model.safetensors"), [&](TensorToWrite& tensor) {
    found |= tensor.name == name;
    return tensor.name != name;
  });
  ASSERT_TRUE(found);
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), folder_, name, "missing");
}

TEST_F(ShardedResumeFaults, AWeightOfAnotherRanksExpertWithTheWrongShape) {
  const std::string name = "model.layers.1.mlp.experts.7.gate_proj.weight";
  test_util::rewrite_safetensors(file("model.safetensors"), [&](TensorToWrite& tensor) {
    if (tensor.name == name) tensor.shape = {tensor.shape[1], tensor.shape[0]};
    return true;
  });
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file("model.safetensors"), name, "shape");
}

TEST_F(ShardedResumeFaults, MomentsWithTheWrongShapeOrDtype) {
  const std::string name = "exp_avg_sq.model.layers.1.mlp.experts.down_proj";  // (8, H, I): every expert's
  test_util::rewrite_safetensors(file(kTrainStateTensors), [&](TensorToWrite& tensor) {
    if (tensor.name == name) tensor.shape = {tensor.shape[0], tensor.shape[2], tensor.shape[1]};
    return true;
  });
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file(kTrainStateTensors), name, "shape");

  SetUp();  // a fresh checkpoint (the same folder, rewritten)
  const std::string norm = "exp_avg.model.norm.weight";  // 4 bytes an element: the same bytes read as two BF16 each
  test_util::rewrite_safetensors(file(kTrainStateTensors), [&](TensorToWrite& tensor) {
    if (tensor.name == norm) {
      tensor.dtype = DType::BF16;
      tensor.shape[0] *= 2;
    }
    return true;
  });
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file(kTrainStateTensors), norm, "dtype");
}

TEST_F(ShardedResumeFaults, AMissingOrUnexpectedMoment) {
  const std::string name = "exp_avg.model.layers.3.mlp.experts.gate_up_proj";
  test_util::rewrite_safetensors(file(kTrainStateTensors), [&](TensorToWrite& tensor) { return tensor.name != name; });
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file(kTrainStateTensors), name, "missing");

  SetUp();
  const float values[2] = {1, 2};
  test_util::rewrite_safetensors(file(kTrainStateTensors), [](TensorToWrite&) { return true; },
                                 {{"exp_avg_sq.model.layers.9.mlp.experts.down_proj", DType::F32, {2}, values, 8}});
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file(kTrainStateTensors), "exp_avg_sq.model.layers.9", "unexpected");
}

TEST_F(ShardedResumeFaults, MomentsOfAnotherStep) {
  nlohmann::json state = test_util::read_json(file(kTrainStateJson));
  state["step"] = kStep + 1;
  test_util::write_json(file(kTrainStateJson), state);
  EXPECT_MESSAGE_HAS(open_and_read_rank0(), file(kTrainStateTensors), "step", std::to_string(kStep + 1));
}

TEST_F(ShardedResumeFaults, ALayoutOfAnotherModel) {
  const CheckpointInfo checkpoint = open_checkpoint(folder_);
  nlohmann::json other = config_.source;
  other["num_hidden_layers"] = 2;
  const ModelConfig smaller = parse_config(other, "smaller test config");
  EXPECT_MESSAGE_HAS(error_of([&] { read_checkpoint_values(checkpoint, smaller); }), folder_, "config.json");
  CheckpointInfo closed = checkpoint;
  closed.files.reset();
  EXPECT_MESSAGE_HAS(error_of([&] { read_checkpoint_values(closed, config_); }), folder_, "closed");
}

}  // namespace
}  // namespace moetune::testing
