// Why: a folder written by several ranks, each holding only its own experts (and a share of the replicated tensors),
// must be the very folder one process writes — byte for byte, in both expert layouts, in f32 and bf16, in one file or
// in shards, for the final model and for a training checkpoint — and a failure on any rank must stop every rank and
// leave no folder under the final name. Ranks are threads here, agreeing through a std::barrier where the CLI uses NCCL
// (the callback io/checkpoint_writer.h takes), and hold their values as the CLI's ranks do (a shard of every arena and
// the runs cli/rank_slices.h says they write) or in random pieces that straddle tensors and files. The one-process
// writer itself is pinned to write_safetensors, an independent writer of the same format.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/model.h"
#include "cli/rank_slices.h"
#include "ep_test_models.h"
#include "io/checkpoint_writer.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "parallel/expert_shard.h"
#include "test_util.h"
#include "train/train_state.h"

namespace moetune::testing {
namespace {

namespace fs = std::filesystem;
using test_util::golden_folder;
using test_util::TempFolder;

// Ranks as threads: max_over_ranks through a barrier.
class ThreadRanks {
 public:
  explicit ThreadRanks(int count) : values_(static_cast<size_t>(count), 0), sync_(count) {}
  SaveRanks of(int rank) {
    return {rank, [this, rank](int value) { return max_over_ranks(rank, value); }};
  }
  // Called by rank 0 inside each agreement (the others wait), with its number: 0 after the staging folder is made, 1
  // for rank 0's process id, 2 after the values are written, 3 after the rename.
  std::function<void(int agreement)> between;
  // Runs save(rank) on one thread per rank; returns each rank's error message ("" when it returned).
  std::vector<std::string> run(const std::function<void(int rank)>& save) {
    std::vector<std::string> errors(values_.size());
    std::vector<std::thread> threads;
    for (size_t r = 0; r < values_.size(); ++r)
      threads.emplace_back([&, r] {
        try {
          save(static_cast<int>(r));
        } catch (const Error& error) {
          errors[r] = error.what();
        } catch (const std::exception& error) {
          errors[r] = std::string("not a moetune::Error: ") + error.what();
        }
      });
    for (std::thread& thread : threads) thread.join();
    return errors;
  }

 private:
  int max_over_ranks(int rank, int value) {
    values_[static_cast<size_t>(rank)] = value;
    sync_.arrive_and_wait();
    const int largest = *std::max_element(values_.begin(), values_.end());
    if (rank == 0 && between) between(agreements_++);
    sync_.arrive_and_wait();
    return largest;
  }

  std::vector<int> values_;
  std::barrier<> sync_;
  int agreements_ = 0;
};

// How the values of a save are spread over the ranks: the CLI's way (EP rank q of DP replica 0 holds expert shard q and
// writes cli::written_runs of it; the other replicas hold nothing), or random pieces of the full arenas dealt to
// `random_ranks` ranks.
struct Spread {
  std::string name;
  int ep = 1, dp = 1;
  int random_ranks = 0;
};
const std::vector<Spread> kSpreads = {{"one_rank", 1, 1, 0}, {"ep2", 2, 1, 0}, {"ep4", 4, 1, 0},
                                      {"ep2_dp2", 2, 2, 0}, {"random_pieces_3_ranks", 0, 0, 3}};

// The full-layout arenas of a save (the moments empty for a model save).
// One rank's values: its copies of its shard (as a GPU rank downloads them) and the runs it writes.
struct RankValues {
  std::vector<float> params, exp_avg, exp_avg_sq;
  std::vector<HeldRun> held;
};

std::vector<RankValues> spread_values(const ModelConfig& config, const FullArenas& full, const Spread& spread) {
  const std::vector<std::pair<SourceArena, const std::vector<float>*>> arenas = {
      {SourceArena::Params, &full.params}, {SourceArena::ExpAvg, &full.exp_avg}, {SourceArena::ExpAvgSq, &full.exp_avg_sq}};
  if (spread.random_ranks > 0) {
    std::vector<RankValues> ranks(static_cast<size_t>(spread.random_ranks));
    std::mt19937_64 generator(7);
    for (const auto& [arena, values] : arenas)
      for (size_t at = 0; at < values->size();) {
        const size_t count = std::min<size_t>(1 + generator() % 3000, values->size() - at);
        ranks[generator() % ranks.size()].held.push_back({arena, at, count, values->data() + at});
        at += count;
      }
    return ranks;
  }
  std::vector<RankValues> ranks(static_cast<size_t>(spread.ep * spread.dp));
  const int per = config.num_experts / spread.ep;
  for (int q = 0; q < spread.ep; ++q) {
    const ModelConfig shard = parallel::expert_shard_config(config, q * per, per);
    const std::vector<cli::ShardRun> runs = cli::shard_runs(config, shard);
    const size_t size = ParamLayout(shard).total_floats();
    RankValues& rank = ranks[static_cast<size_t>(q)];  // DP replica 0
    rank.params = cli::slice_to_shard(runs, full.params.data(), size);
    if (!full.exp_avg.empty()) {
      rank.exp_avg = cli::slice_to_shard(runs, full.exp_avg.data(), size);
      rank.exp_avg_sq = cli::slice_to_shard(runs, full.exp_avg_sq.data(), size);
    }
    rank.held = cli::held_runs(cli::written_runs(runs, q, spread.ep), rank.params.data(),
                               rank.exp_avg.empty() ? nullptr : rank.exp_avg.data(),
                               rank.exp_avg_sq.empty() ? nullptr : rank.exp_avg_sq.data());
  }
  return ranks;
}

// Every file of a folder, by name.
std::map<std::string, std::string> folder_files(const std::string& folder) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(folder))
    files[entry.path().filename().string()] = test_util::read_text(entry.path().string());
  return files;
}

// The same file names, each with the same bytes.
void expect_same_folder(const std::string& actual, const std::string& expected) {
  const std::map<std::string, std::string> a = folder_files(actual), e = folder_files(expected);
  std::vector<std::string> a_names, e_names;
  for (const auto& [name, bytes] : a) a_names.push_back(name);
  for (const auto& [name, bytes] : e) e_names.push_back(name);
  ASSERT_EQ(a_names, e_names) << actual;
  for (const auto& [name, bytes] : e) EXPECT_TRUE(a.at(name) == bytes) << actual << "/" << name << " differs";
}

void expect_no_errors(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

uint64_t model_bytes(const ModelConfig& config, DType dtype) {
  return ParamLayout(config).parameter_count() * static_cast<uint64_t>(dtype_size(dtype));
}

TEST(CooperativeSave, ModelFolderIsTheOneProcessFolderByteForByte) {
  for (const ModelConfig& config : eight_expert_configs()) {
    const ParamLayout layout(config);
    const Model model = Model::from_config(config, 5);
    const FullArenas full{std::vector<float>(model.params(), model.params() + model.buffer_size()), {}, {}};
    for (const ExpertLayout expert_layout : {ExpertLayout::PerExpert, ExpertLayout::Fused})
      for (const DType dtype : {DType::F32, DType::BF16})
        for (const bool sharded : {false, true}) {
          SCOPED_TRACE(config.architecture + (expert_layout == ExpertLayout::Fused ? " fused " : " per-expert ") +
                       dtype_name(dtype) + (sharded ? " sharded" : ""));
          SaveOptions options;
          options.expert_layout = expert_layout;
          options.dtype = dtype;
          options.copy_files_from = golden_folder("olmoe");  // generation_config.json, copied by rank 0
          if (sharded) options.max_shard_bytes = model_bytes(config, dtype) / 4;
          TempFolder temp;
          const std::string one = temp.file("one");
          save_hf_checkpoint(one, config, layout, full.params.data(), options);
          ASSERT_TRUE(fs::exists(one + "/generation_config.json"));
          ASSERT_EQ(fs::exists(one + "/model.safetensors.index.json"), sharded);
          if (sharded) {
            size_t shards = 0;
            for (const auto& [name, bytes] : folder_files(one)) shards += name.rfind("model-0", 0) == 0;
            ASSERT_GE(shards, 3u);
          }
          for (const Spread& spread : kSpreads) {
            SCOPED_TRACE(spread.name);
            std::vector<RankValues> values = spread_values(config, full, spread);
            ThreadRanks ranks(static_cast<int>(values.size()));
            const std::string out = temp.file(spread.name);
            expect_no_errors(ranks.run([&](int r) {
              save_hf_checkpoint(out, config, values[static_cast<size_t>(r)].held, options, ranks.of(r));
            }));
            expect_same_folder(out, one);
          }
          EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});
        }
  }
}

// A training checkpoint of the built-in model after `step` steps, with random moments.
struct CheckpointInputs {
  Model model = Model::from_config(builtin_tiny_config(), 9);
  TrainState state;
  CheckpointRecord record;
  explicit CheckpointInputs(long step) {
    state.step = step;
    state.exp_avg = random_values(model.buffer_size(), 10);
    state.exp_avg_sq = random_values(model.buffer_size(), 11);
    record.batch_size = 2;
    record.seq_len = 8;
    record.sampler.dataset_size = 10;
    record.run = {{"note", "cooperative"}};
  }
  FullArenas arenas() const {
    return {std::vector<float>(model.params(), model.params() + model.buffer_size()), state.exp_avg, state.exp_avg_sq};
  }
};

TEST(CooperativeSave, TrainingCheckpointIsTheOneProcessCheckpointByteForByte) {
  const CheckpointInputs inputs(4);
  const FullArenas full = inputs.arenas();
  TempFolder temp;
  const std::string one = write_checkpoint(temp.file("one"), inputs.model, inputs.state, inputs.record);
  for (const Spread& spread : kSpreads) {
    SCOPED_TRACE(spread.name);
    std::vector<RankValues> values = spread_values(inputs.model.config(), full, spread);
    ThreadRanks ranks(static_cast<int>(values.size()));
    std::vector<std::string> folders(values.size());
    expect_no_errors(ranks.run([&](int r) {
      folders[static_cast<size_t>(r)] =
          write_checkpoint(temp.file(spread.name), inputs.model.config(), values[static_cast<size_t>(r)].held,
                           inputs.state.step, inputs.record, CheckpointWriteOptions{}, ranks.of(r));
    }));
    const std::string folder = temp.file(spread.name + "/step-4");
    for (const std::string& returned : folders) EXPECT_EQ(returned, folder);
    expect_same_folder(folder, one);
    EXPECT_EQ(test_util::staging_leftovers(temp.file(spread.name)), std::vector<std::string>{});
  }
}

TEST(CooperativeSave, RankZeroPrunesOnlyOnceTheNewCheckpointIsInPlace) {
  TempFolder temp;
  const std::string checkpoints = temp.file("checkpoints");
  fs::create_directories(checkpoints + "/step-9/x");      // a later step of an abandoned timeline
  fs::create_directories(checkpoints + "/step-1.tmp-1");  // a killed save's staging folder
  CheckpointWriteOptions options;
  options.keep_last = 2;
  for (long step = 1; step <= 4; ++step) {
    const CheckpointInputs inputs(step);
    std::vector<RankValues> values = spread_values(inputs.model.config(), inputs.arenas(), kSpreads[3]);  // EP 2 x DP 2
    ThreadRanks ranks(static_cast<int>(values.size()));
    expect_no_errors(ranks.run([&](int r) {
      write_checkpoint(checkpoints, inputs.model.config(), values[static_cast<size_t>(r)].held, step, inputs.record,
                       options, ranks.of(r));
    }));
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(checkpoints)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-3", "step-4"}));
  // A normal checkpoint: it loads (and so resumes on any number of ranks) with the values written.
  const LoadedCheckpoint loaded = load_checkpoint(checkpoints);
  const CheckpointInputs expected(4);
  EXPECT_EQ(loaded.record.step, 4);
  EXPECT_EQ(loaded.state.exp_avg, expected.state.exp_avg);
  EXPECT_EQ(loaded.state.exp_avg_sq, expected.state.exp_avg_sq);
  EXPECT_TRUE(std::equal(loaded.model.params(), loaded.model.params() + loaded.model.buffer_size(),
                         expected.model.params()));
}

// The bytes write_safetensors writes at `path` for `tensors` (their values at arena + offset, converted whole, in
// memory).
std::string written_by_write_safetensors(const std::string& path, const std::vector<SourcedTensor>& tensors,
                                         const float* arena, const std::map<std::string, std::string>& metadata) {
  std::vector<std::vector<unsigned char>> converted;
  std::vector<TensorToWrite> entries;
  converted.reserve(tensors.size());
  for (const SourcedTensor& tensor : tensors) {
    converted.emplace_back(tensor.numel * static_cast<size_t>(dtype_size(tensor.dtype)));
    convert_from_f32(tensor.dtype, arena + tensor.offset, converted.back().data(), tensor.numel);
    entries.push_back({tensor.name, tensor.dtype, tensor.shape, converted.back().data(), converted.back().size()});
  }
  write_safetensors(path, entries, metadata);
  return test_util::read_text(path);
}

TEST(CooperativeSave, OneProcessWritesWhatWriteSafetensorsWrites) {
  const CheckpointInputs inputs(2);
  const ModelConfig& config = inputs.model.config();
  const ParamLayout& layout = inputs.model.layout();
  for (const ExpertLayout expert_layout : {ExpertLayout::PerExpert, ExpertLayout::Fused})
    for (const DType dtype : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(std::string(expert_layout == ExpertLayout::Fused ? "fused " : "per-expert ") + dtype_name(dtype));
      TempFolder temp;
      SaveOptions options;
      options.expert_layout = expert_layout;
      options.dtype = dtype;
      options.max_shard_bytes = model_bytes(config, dtype) / 3;
      save_hf_checkpoint(temp.file("saved"), config, layout, inputs.model.params(), options);
      // Each shard: its tensors (the index says which, in hf_tensors order) as write_safetensors writes them.
      const nlohmann::json index = test_util::read_json(temp.file("saved/model.safetensors.index.json"));
      std::map<std::string, std::vector<SourcedTensor>> by_file;
      for (const HfTensor& tensor : hf_tensors(config, layout, expert_layout))
        by_file[index.at("weight_map").at(tensor.name).get<std::string>()].push_back(
            {tensor.name, dtype, tensor.shape, SourceArena::Params, tensor.offset, tensor.numel});
      ASSERT_GE(by_file.size(), 3u);
      for (const auto& [file, tensors] : by_file)
        EXPECT_TRUE(test_util::read_text(temp.file("saved/" + file)) ==
                    written_by_write_safetensors(temp.file(file), tensors, inputs.model.params(), {{"format", "pt"}}))
            << file;
    }
  // The moments of a checkpoint: what write_checkpoint wrote with write_safetensors before the cooperative writer.
  TempFolder temp;
  const std::string folder = write_checkpoint(temp.file("checkpoints"), inputs.model, inputs.state, inputs.record);
  std::vector<float> both(inputs.state.exp_avg);  // offsets below are into both moments, one after the other
  both.insert(both.end(), inputs.state.exp_avg_sq.begin(), inputs.state.exp_avg_sq.end());
  std::vector<SourcedTensor> moments;
  for (const auto& [prefix, base] : {std::pair{"exp_avg.", size_t{0}}, std::pair{"exp_avg_sq.", layout.total_floats()}})
    for (const ParamInfo& info : layout.params())
      moments.push_back({prefix + info.name, DType::F32, info.shape, SourceArena::Params, base + info.offset, info.numel});
  EXPECT_TRUE(test_util::read_text(folder + "/" + kTrainStateTensors) ==
              written_by_write_safetensors(temp.file("moments.safetensors"), moments, both.data(),
                                           {{"format", "moetune-train-state"}, {"step", "2"}}));
}

// --- failures -----------------------------------------------------------------------------------------------------------

struct FailureCase {
  Model model = Model::from_config(builtin_tiny_config(), 12);
  FullArenas full{std::vector<float>(model.params(), model.params() + model.buffer_size()), {}, {}};
  std::vector<RankValues> values = spread_values(model.config(), full, kSpreads[2]);  // EP 4
  ThreadRanks ranks{4};
  TempFolder temp;
  std::string target = temp.file("final");
  SaveOptions options;
  FailureCase() { options.max_shard_bytes = model_bytes(model.config(), DType::F32) / 4; }
  std::vector<std::string> save() {
    return ranks.run([&](int r) {
      save_hf_checkpoint(target, model.config(), values[static_cast<size_t>(r)].held, options, ranks.of(r));
    });
  }
};

TEST(CooperativeSave, ARankThatFailsStopsEveryRankAndThePreviousFolderStays) {
  FailureCase failure;
  const Model previous = Model::from_config(failure.model.config(), 13);
  previous.save_pretrained(failure.target);
  const std::map<std::string, std::string> before = folder_files(failure.target);
  // Rank 2 would write some values twice: it fails before writing any; every rank learns it at the next agreement.
  failure.values[2].held.push_back(failure.values[2].held.back());
  const std::vector<std::string> errors = failure.save();
  EXPECT_MESSAGE_HAS(errors[2], "overlap");
  for (const int r : {0, 1, 3}) EXPECT_MESSAGE_HAS(errors[r], failure.target, "rank 2 failed");
  EXPECT_TRUE(folder_files(failure.target) == before) << "the previous folder changed";
  EXPECT_EQ(test_util::staging_leftovers(failure.temp.path()), std::vector<std::string>{});
}

TEST(CooperativeSave, AFileThatCannotBeWrittenIsNamedAndLeavesNothing) {
  FailureCase failure;
  std::string removed;
  // Between rank 0 making the files and the ranks writing them, one shard disappears.
  failure.ranks.between = [&](int agreement) {
    if (agreement != 1) return;
    for (const auto& staging : fs::directory_iterator(failure.temp.path()))
      for (const auto& file : fs::directory_iterator(staging.path()))
        if (file.path().filename().string().rfind("model-00002-of-", 0) == 0) removed = file.path().string();
    fs::remove(removed);
  };
  const std::vector<std::string> errors = failure.save();
  ASSERT_NE(removed, "");
  int naming = 0;
  for (const std::string& error : errors) {
    EXPECT_NE(error, "") << "every rank fails";
    naming += error.find(removed) != std::string::npos;
  }
  EXPECT_GE(naming, 1) << "the ranks that write into it name the file";
  EXPECT_FALSE(fs::exists(failure.target));
  EXPECT_EQ(test_util::staging_leftovers(failure.temp.path()), std::vector<std::string>{});
}

TEST(CooperativeSave, RankZeroFailingToCompleteTheFolderStopsEveryRank) {
  FailureCase failure;
  // A source folder whose tokenizer.json cannot be copied: rank 0 fails after every rank wrote its values.
  failure.options.copy_files_from = failure.temp.file("source");
  fs::create_directories(failure.options.copy_files_from + "/tokenizer.json");
  const std::vector<std::string> errors = failure.save();
  EXPECT_MESSAGE_HAS(errors[0], "tokenizer.json");
  for (const int r : {1, 2, 3}) EXPECT_MESSAGE_HAS(errors[r], failure.target, "rank 0 failed");
  EXPECT_FALSE(fs::exists(failure.target));
  EXPECT_EQ(test_util::staging_leftovers(failure.temp.path()), std::vector<std::string>{});
}

}  // namespace
}  // namespace moetune::testing
