// Why: the streaming loader and the sharded save are what a 60 GB checkpoint goes through, so each promise is pinned here:
// shards exactly as save_pretrained writes them (names, index, assignment), a round trip through 3+ shards that is bit
// exact, parallel loads equal to serial ones, an owned-experts filter that reads nothing else and leaves other slices
// untouched, errors that name the shard and the tensor before any value is written, and host memory that grows by the
// pieces in flight — not by the checkpoint — while loading and saving.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "api/model.h"
#include "io/hf_checkpoint.h"
#include "io/streaming_loader.h"
#include "test_util.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using test_util::copy_golden;
using test_util::error_of;
using test_util::golden_families;
using test_util::golden_folder;
using test_util::TempFolder;

constexpr float kSentinel = -12345.5f;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool same_bits(const Model& a, const Model& b) {
  return a.buffer_size() == b.buffer_size() &&
         std::memcmp(a.params(), b.params(), a.buffer_size() * sizeof(float)) == 0;
}

std::vector<float> load(const std::string& folder, const Model& like, const LoadOptions& options,
                        LoadReport* report = nullptr) {
  std::vector<float> params(like.buffer_size(), kSentinel);
  load_hf_weights(folder, like.config(), like.layout(), params.data(), options, report);
  return params;
}

LoadOptions quiet(int threads = 0) {
  LoadOptions options;
  options.threads = threads;
  options.progress = false;
  return options;
}

// A copy of the golden checkpoint of `family`, saved by moetune in shards of at most `max_shard_bytes`.
std::string save_sharded(const Model& model, const std::string& folder, uint64_t max_shard_bytes,
                         ExpertLayout layout = ExpertLayout::PerExpert, DType dtype = DType::F32) {
  SaveOptions options;
  options.expert_layout = layout;
  options.dtype = dtype;
  options.max_shard_bytes = max_shard_bytes;
  model.save_pretrained(folder, options);
  return folder;
}

std::vector<std::string> shard_files(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// --- shard assignment and file names ---------------------------------------------------------------------------------

TEST(Loader, ShardPlanIsHuggingFaces) {
  using Plan = std::vector<std::vector<size_t>>;
  // huggingface_hub's own test (test_serialization.py::test_multiple_shards): sizes 6, 10, 30, 2, 2 with a limit of 10
  // give [layer_1], [layer_3], [layer_2], [layer_4, layer_5] — the oversized tensor is numbered before the open shard.
  EXPECT_EQ(plan_shards({6, 10, 30, 2, 2}, 10), (Plan{{0}, {2}, {1}, {3, 4}}));
  EXPECT_EQ(plan_shards({6, 10, 30, 2, 2}, 100), (Plan{{0, 1, 2, 3, 4}}));
  // The docstring's example: [6, 6, 2, 6, 2, 2] GB at 10 GB -> [6], [6+2], [6+2+2].
  EXPECT_EQ(plan_shards({6, 6, 2, 6, 2, 2}, 10), (Plan{{0}, {1, 2}, {3, 4, 5}}));
  EXPECT_EQ(plan_shards({}, 10), Plan{});
  EXPECT_EQ(SaveOptions{}.max_shard_bytes, 5'000'000'000u);  // save_pretrained's "5GB"
}

TEST(Loader, ShardedSaveWritesSavePretrainedsFilesAndIndex) {
  const Model model = Model::from_pretrained(golden_folder("qwen3_moe"));
  TempFolder temp;
  const uint64_t limit = 40'000;
  const std::string out = save_sharded(model, temp.file("saved"), limit);

  const std::vector<std::string> files = shard_files(out);
  ASSERT_GE(files.size(), 3u);
  for (size_t i = 0; i < files.size(); ++i) {
    char expected[64];
    std::snprintf(expected, sizeof expected, "model-%05zu-of-%05zu.safetensors", i + 1, files.size());
    EXPECT_EQ(files[i], expected);
  }
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});

  // The index: json.dumps(index, indent=2, sort_keys=True) + "\n" of {"metadata": {...}, "weight_map": {...}}.
  const std::string index_text = test_util::read_text(out + "/model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(index_text);
  EXPECT_EQ(index_text, index.dump(2) + "\n");
  ASSERT_EQ(index.size(), 2u);
  EXPECT_EQ(index["metadata"]["total_parameters"].get<size_t>(), model.parameter_count());
  uint64_t total_size = 0;
  std::map<std::string, std::string> found;
  for (const std::string& file : files) {
    const SafetensorsFile shard = SafetensorsFile::open(out + "/" + file);
    EXPECT_EQ(shard.metadata().at("format"), "pt");
    uint64_t shard_bytes = 0;
    for (const TensorEntry& entry : shard.tensors()) {
      found[entry.name] = file;
      shard_bytes += entry.nbytes;
    }
    // No shard over the limit, unless it holds one tensor larger than the limit.
    EXPECT_TRUE(shard_bytes <= limit || shard.tensors().size() == 1) << file << ": " << shard_bytes << " bytes";
    total_size += shard_bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total_size);
  using WeightMap = std::map<std::string, std::string>;
  EXPECT_EQ(index["weight_map"].get<WeightMap>(), found);
  // Same tensors, in the same (per-expert, save_pretrained) names as the unsharded save.
  std::vector<std::string> names;
  for (const auto& [name, file] : found) names.push_back(name);
  EXPECT_EQ(names, test_util::tensor_names(golden_folder("qwen3_moe") + "/model.safetensors"));
}

TEST(Loader, ShardedRoundTripIsBitExact) {
  for (const std::string& family : golden_families()) {
    const Model original = Model::from_pretrained(golden_folder(family));
    for (ExpertLayout layout : {ExpertLayout::PerExpert, ExpertLayout::Fused}) {
      SCOPED_TRACE(family + (layout == ExpertLayout::Fused ? " fused" : " per-expert"));
      TempFolder temp;
      const std::string out = save_sharded(original, temp.file("saved"), 30'000, layout);
      EXPECT_GE(shard_files(out).size(), 3u);
      EXPECT_TRUE(same_bits(Model::from_pretrained(out), original));
      // Saved over again with one shard: the index of the sharded save must not survive.
      save_sharded(original, out, 1'000'000'000, layout);
      EXPECT_EQ(shard_files(out), std::vector<std::string>{"model.safetensors"});
      EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));
      EXPECT_TRUE(same_bits(Model::from_pretrained(out), original));
    }
  }
}

TEST(Loader, ShardedBf16RoundTripRoundsOnce) {
  const Model original = Model::from_pretrained(golden_folder("mixtral"));
  TempFolder temp;
  const std::string out = save_sharded(original, temp.file("saved"), 20'000, ExpertLayout::PerExpert, DType::BF16);
  ASSERT_GE(shard_files(out).size(), 3u);
  const Model loaded = Model::from_pretrained(out);
  ASSERT_EQ(loaded.buffer_size(), original.buffer_size());
  for (size_t i = 0; i < original.buffer_size(); ++i)
    ASSERT_EQ(loaded.params()[i], bf16_to_f32(f32_to_bf16(original.params()[i]))) << "param " << i;
}

// --- parallel, serial, sinks -----------------------------------------------------------------------------------------

TEST(Loader, ParallelLoadEqualsSerialLoad) {
  for (const std::string& family : golden_families()) {
    SCOPED_TRACE(family);
    const Model original = Model::from_pretrained(golden_folder(family));
    TempFolder temp;
    const std::string sharded = save_sharded(original, temp.file("sharded"), 25'000, ExpertLayout::Fused, DType::BF16);
    for (const std::string& folder : {golden_folder(family), sharded}) {
      LoadReport serial_report, parallel_report;
      const std::vector<float> serial = load(folder, original, quiet(1), &serial_report);
      const std::vector<float> parallel = load(folder, original, quiet(8), &parallel_report);
      EXPECT_TRUE(same_bits(serial, parallel)) << folder;
      EXPECT_EQ(serial_report.threads, 1);
      EXPECT_GT(parallel_report.threads, 1);
      EXPECT_EQ(serial_report.bytes_read, parallel_report.bytes_read);
    }
    // The golden folder itself loads exactly what Model::from_pretrained holds (alignment gaps stay as they were).
    std::vector<float> params(original.buffer_size(), 0.0f);
    load_hf_weights(golden_folder(family), original.config(), original.layout(), params.data(), quiet(3));
    EXPECT_EQ(std::memcmp(params.data(), original.params(), params.size() * sizeof(float)), 0);
  }
}

// Records every write, to check the sink contract: pieces match their destination, never overlap, cover everything.
class RecordingSink : public TensorSink {
 public:
  void begin(int workers) override { workers_ = workers; }
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override {
    EXPECT_EQ(dest.numel, static_cast<size_t>(src.numel()));
    EXPECT_EQ(dest.shape, src.shape);
    EXPECT_EQ(dest.name, src.name);
    EXPECT_GE(worker, 0);
    EXPECT_LT(worker, workers_);
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_.emplace_back(dest.offset, dest.offset + dest.numel);
    bytes_ += src.nbytes;
  }
  void end() override { ended_ = true; }

  std::vector<std::pair<size_t, size_t>> ranges_;
  uint64_t bytes_ = 0;
  int workers_ = 0;
  bool ended_ = false;
  std::mutex mutex_;
};

// Sorted intervals with touching ones joined.
std::vector<std::pair<size_t, size_t>> merged(std::vector<std::pair<size_t, size_t>> ranges) {
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& range : ranges) {
    if (!out.empty() && out.back().second == range.first)
      out.back().second = range.second;
    else
      out.push_back(range);
  }
  return out;
}

TEST(Loader, SinkSeesDisjointPiecesCoveringEveryTensor) {
  const Model model = Model::from_pretrained(golden_folder("olmoe"));
  RecordingSink sink;
  const LoadReport report = stream_hf_weights(golden_folder("olmoe"), model.config(), model.layout(), sink, quiet(4));
  EXPECT_TRUE(sink.ended_);
  EXPECT_EQ(sink.workers_, report.threads);
  EXPECT_EQ(sink.bytes_, report.bytes_read);
  std::vector<std::pair<size_t, size_t>> expected;
  for (const HfTensor& tensor : hf_tensors(model.config(), model.layout(), report.expert_layout))
    expected.emplace_back(tensor.offset, tensor.offset + tensor.numel);
  std::sort(sink.ranges_.begin(), sink.ranges_.end());
  for (size_t i = 1; i < sink.ranges_.size(); ++i) ASSERT_LE(sink.ranges_[i - 1].second, sink.ranges_[i].first) << "overlap";
  EXPECT_EQ(merged(sink.ranges_), merged(expected));
}

// --- owned experts ---------------------------------------------------------------------------------------------------

TEST(Loader, OwnedExpertsFilterReadsOnlyThoseExperts) {
  for (const std::string& family : golden_families()) {
    const Model original = Model::from_pretrained(golden_folder(family));
    const ModelConfig& config = original.config();
    const int experts = config.num_experts;
    // This "rank" holds experts 1 and E-2 of even layers and expert 0 of odd layers.
    const auto owns = [experts](int layer, int expert) {
      return layer % 2 == 0 ? (expert == 1 || expert == experts - 2) : expert == 0;
    };
    for (ExpertLayout layout : {ExpertLayout::PerExpert, ExpertLayout::Fused}) {
      SCOPED_TRACE(family + (layout == ExpertLayout::Fused ? " fused" : " per-expert"));
      TempFolder temp;
      const std::string folder = save_sharded(original, temp.file("ckpt"), 50'000, layout, DType::BF16);
      LoadOptions options = quiet(3);
      options.owns_expert = owns;
      LoadReport report;
      const std::vector<float> params = load(folder, original, options, &report);
      LoadReport full_report;
      const std::vector<float> full = load(folder, original, quiet(3), &full_report);

      // Parameters: owned expert slices and every non-expert parameter as in the full load, the rest untouched.
      size_t owned_slices = 0, skipped_slices = 0;
      for (const HfTensor& tensor : hf_tensors(config, original.layout(), ExpertLayout::Fused)) {
        const ExpertRef ref = expert_of(tensor.name);
        if (!ref.is_expert()) {
          EXPECT_EQ(std::memcmp(params.data() + tensor.offset, full.data() + tensor.offset, tensor.numel * 4), 0)
              << tensor.name;
          continue;
        }
        ASSERT_TRUE(ref.fused) << tensor.name;
        const size_t per_expert = tensor.numel / static_cast<size_t>(experts);
        for (int e = 0; e < experts; ++e) {
          const float* got = params.data() + tensor.offset + static_cast<size_t>(e) * per_expert;
          const float* want = full.data() + tensor.offset + static_cast<size_t>(e) * per_expert;
          if (owns(ref.layer, e)) {
            EXPECT_EQ(std::memcmp(got, want, per_expert * 4), 0) << tensor.name << " expert " << e;
            ++owned_slices;
          } else {
            EXPECT_TRUE(std::all_of(got, got + per_expert, [](float v) { return v == kSentinel; }))
                << tensor.name << " expert " << e << " was written";
            ++skipped_slices;
          }
        }
      }
      EXPECT_GT(owned_slices, 0u);
      EXPECT_GT(skipped_slices, owned_slices);

      // Bytes: everything but the other experts' bytes, counted from the files themselves.
      const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(folder);
      uint64_t other_experts = 0, all = 0;
      size_t tensors_not_read = 0;
      for (const std::string& name : checkpoint.names()) {
        const TensorEntry& entry = *checkpoint.find(name);
        all += entry.nbytes;
        const ExpertRef ref = expert_of(name);
        if (!ref.is_expert()) continue;
        if (!ref.fused) {
          if (!owns(ref.layer, ref.expert)) other_experts += entry.nbytes, ++tensors_not_read;
          continue;
        }
        int not_owned = 0;
        for (int e = 0; e < experts; ++e) not_owned += !owns(ref.layer, e);
        other_experts += entry.nbytes / static_cast<size_t>(experts) * static_cast<size_t>(not_owned);
      }
      EXPECT_EQ(report.bytes_total, all);
      EXPECT_EQ(full_report.bytes_read, all);
      EXPECT_EQ(report.bytes_read, all - other_experts);
      EXPECT_EQ(report.tensors_total, full_report.tensors_read);
      EXPECT_EQ(report.tensors_read, report.tensors_total - tensors_not_read);
    }
  }
}

TEST(Loader, ExpertOfParsesCheckpointNames) {
  const auto check = [](const std::string& name, int layer, int expert, bool fused) {
    const ExpertRef ref = expert_of(name);
    EXPECT_EQ(ref.layer, layer) << name;
    EXPECT_EQ(ref.expert, expert) << name;
    EXPECT_EQ(ref.fused, fused) << name;
  };
  check("model.layers.3.mlp.experts.7.gate_proj.weight", 3, 7, false);
  check("model.layers.12.block_sparse_moe.experts.0.w2.weight", 12, 0, false);
  check("model.layers.0.mlp.experts.gate_up_proj", 0, -1, true);
  check("model.layers.41.mlp.experts.down_proj", 41, -1, true);
  check("model.layers.3.mlp.gate.weight", -1, -1, false);
  check("model.layers.3.mlp.shared_expert.gate_proj.weight", -1, -1, false);
  check("model.layers.3.mlp.shared_expert_gate.weight", -1, -1, false);
  check("model.embed_tokens.weight", -1, -1, false);
  check("lm_head.weight", -1, -1, false);
}

// --- hostile sharded checkpoints -------------------------------------------------------------------------------------

struct ShardedCheckpoint {
  TempFolder temp;
  Model model = Model::from_pretrained(golden_folder("qwen3_moe"));
  std::string folder = save_sharded(model, temp.file("ckpt"), 40'000);
  std::vector<std::string> files = shard_files(folder);
  std::string shard(size_t i) const { return folder + "/" + files[i]; }
  std::string index() const { return folder + "/model.safetensors.index.json"; }
  // Loads into a sentinel-filled buffer; returns the error and checks that nothing was written.
  std::string load_error() const {
    std::vector<float> params(model.buffer_size(), kSentinel);
    const std::string message = error_of([&] {
      load_hf_weights(folder, model.config(), model.layout(), params.data(), quiet(4));
    });
    EXPECT_TRUE(std::all_of(params.begin(), params.end(), [](float v) { return v == kSentinel; }))
        << "a failed load wrote values";
    return message;
  }
};

TEST(Loader, TruncatedShardIsNamed) {
  ShardedCheckpoint checkpoint;
  ASSERT_GE(checkpoint.files.size(), 3u);
  fs::resize_file(checkpoint.shard(1), fs::file_size(checkpoint.shard(1)) - 1000);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.files[1], "truncated");
}

TEST(Loader, IndexNamingAMissingShard) {
  ShardedCheckpoint checkpoint;
  fs::remove(checkpoint.shard(2));
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), "model.safetensors.index.json", checkpoint.files[2], "does not exist");
}

TEST(Loader, TensorInTwoShards) {
  ShardedCheckpoint checkpoint;
  // A tensor of shard 1 written into shard 3 as well (the index still maps it to shard 1).
  const std::string name = SafetensorsFile::open(checkpoint.shard(0)).tensors().back().name;
  std::vector<float> copy;
  {
    const SafetensorsFile first = SafetensorsFile::open(checkpoint.shard(0));
    const TensorEntry& entry = *first.find(name);
    copy.resize(static_cast<size_t>(entry.numel()));
    read_as_f32(entry, copy.data());
  }
  const std::vector<int64_t> shape = SafetensorsFile::open(checkpoint.shard(0)).find(name)->shape;
  test_util::rewrite_safetensors(checkpoint.shard(2), [](TensorToWrite&) { return true; },
                                 {{name, DType::F32, shape, copy.data(), copy.size() * 4}});
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), name, checkpoint.files[0], checkpoint.files[2]);
}

TEST(Loader, ShapeMismatchWithConfigNamesTheShard) {
  ShardedCheckpoint checkpoint;
  nlohmann::json config = test_util::read_json(checkpoint.folder + "/config.json");
  config["moe_intermediate_size"] = config["moe_intermediate_size"].get<int>() + 2;
  test_util::write_json(checkpoint.folder + "/config.json", config);
  checkpoint.model = Model::from_config(load_config(checkpoint.folder), 1);
  const std::string message = checkpoint.load_error();
  // The first expert tensor in config order, and the shard that holds it.
  std::string first;
  for (const HfTensor& tensor : hf_tensors(checkpoint.model.config(), checkpoint.model.layout(), ExpertLayout::PerExpert))
    if (first.empty() && expert_of(tensor.name).is_expert()) first = tensor.name;
  const nlohmann::json index = test_util::read_json(checkpoint.index());
  EXPECT_MESSAGE_HAS(message, first, index["weight_map"][first].get<std::string>(), "shape", "config.json");
}

// --- progress and statistics -----------------------------------------------------------------------------------------

TEST(Loader, ProgressFormats) {
  EXPECT_EQ(format_load_progress(12'340'000'000, 56'780'000'000, 4.0), "loading weights 12.34 / 56.78 GB (22%) | 3.08 GB/s");
  EXPECT_EQ(format_load_progress(0, 0, 0.0), "loading weights 0.00 / 0.00 GB (100%) | 0.00 GB/s");
  EXPECT_EQ(format_load_summary(56'780'000'000, 16.4), "loaded 56.78 GB in 16.4 s (3.46 GB/s)");
}

TEST(Loader, ReportAndSummaryLine) {
  const Model original = Model::from_pretrained(golden_folder("qwen2_moe"));
  TempFolder temp;
  const std::string folder = save_sharded(original, temp.file("ckpt"), 40'000, ExpertLayout::PerExpert, DType::F16);
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  LoadOptions options;
  options.threads = 2;
  options.progress_delay_s = 0.0;  // report even this small load
  options.progress_out = out;
  LoadReport report;
  load(folder, original, options, &report);
  std::rewind(out);
  std::string text;
  for (int c; (c = std::fgetc(out)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(out);

  const std::vector<std::string> lines = test_util::lines_of(text);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), format_load_summary(report.bytes_read, report.seconds));
  for (const std::string& line : lines) EXPECT_TRUE(line.rfind("load", 0) == 0) << line;

  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(folder);
  uint64_t bytes = 0;
  for (const std::string& name : checkpoint.names()) bytes += checkpoint.find(name)->nbytes;
  EXPECT_EQ(report.bytes_total, bytes);
  EXPECT_EQ(report.bytes_read, bytes);
  EXPECT_EQ(report.tensors_total, checkpoint.names().size());
  EXPECT_EQ(report.tensors_read, report.tensors_total);
  EXPECT_EQ(report.shards, shard_files(folder).size());
  EXPECT_EQ(report.threads, 2);
  EXPECT_EQ(report.expert_layout, ExpertLayout::PerExpert);
  EXPECT_GT(report.seconds, 0.0);
  EXPECT_LT(report.seconds, 60.0);
  EXPECT_NEAR(report.gb_per_s(), static_cast<double>(bytes) / 1e9 / report.seconds, 1e-9);

  // The default (progress after 1 s) stays silent for a load this small.
  std::FILE* silent = std::tmpfile();
  LoadOptions defaults;
  defaults.progress_out = silent;
  load(folder, original, defaults);
  EXPECT_EQ(std::ftell(silent), 0L);
  std::fclose(silent);
}

// --- host memory -----------------------------------------------------------------------------------------------------

// Resident set size and its peak (kB) from /proc/self/status.
struct Rss {
  long current_kb = -1;
  long peak_kb = -1;
};

Rss read_rss() {
  std::ifstream in("/proc/self/status");
  Rss rss;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss.current_kb = std::stol(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) rss.peak_kb = std::stol(line.substr(6));
  }
  return rss;
}

// Resets the peak to the current RSS (Linux >= 4.0); false where the kernel does not allow it.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  return out.good();
}

// A Qwen3-MoE of ~126 M parameters: ~252 MB in bf16, four shards of 64 MB (the per-expert matrices are 1 MB each).
ModelConfig synthetic_config() {
  nlohmann::json json = test_util::read_json(golden_folder("qwen3_moe") + "/config.json");
  json["vocab_size"] = 16384;
  json["hidden_size"] = 1024;
  json["num_hidden_layers"] = 4;
  json["num_attention_heads"] = 8;
  json["num_key_value_heads"] = 2;
  json["head_dim"] = 128;
  json["num_local_experts"] = 16;
  json["moe_intermediate_size"] = 512;
  json["intermediate_size"] = 2048;
  return parse_config(json, "synthetic config.json");
}

float pattern(size_t i) { return static_cast<float>(static_cast<int>(i % 2001) - 1000) * 1e-3f; }

TEST(Loader, HostMemoryGrowsByPiecesInFlightNotByShards) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer shadow memory counts in the RSS";
#endif
  if (!reset_peak_rss()) GTEST_SKIP() << "cannot reset the peak RSS (/proc/self/clear_refs)";
  const ModelConfig config = synthetic_config();
  const ParamLayout layout(config);
  const size_t floats = layout.total_floats();
  TempFolder temp;
  const std::string folder = temp.file("synthetic");
  {
    // The arena exists (and is touched) before the save: only what the save adds is measured.
    std::vector<float> params(floats);
    for (size_t i = 0; i < floats; ++i) params[i] = pattern(i);
    const Rss before = read_rss();
    ASSERT_TRUE(reset_peak_rss());
    SaveOptions options;
    options.dtype = DType::BF16;
    options.max_shard_bytes = 64'000'000;
    save_hf_checkpoint(folder, config, layout, params.data(), options);
    const long save_growth_mb = (read_rss().peak_kb - before.current_kb) / 1024;
    std::printf("[ memory ] save: arena %zu MB, peak RSS growth %ld MB\n", floats * 4 >> 20, save_growth_mb);
    EXPECT_LT(save_growth_mb, 64) << "the save holds more than one conversion buffer";
  }
  const std::vector<std::string> files = shard_files(folder);
  ASSERT_GE(files.size(), 4u);
  uint64_t largest = 0, total = 0;
  for (const std::string& file : files) {
    largest = std::max<uint64_t>(largest, fs::file_size(folder + "/" + file));
    total += fs::file_size(folder + "/" + file);
  }

  std::vector<float> params(floats, kSentinel);  // touched: the arena counts before the load starts
  const Rss before = read_rss();
  ASSERT_TRUE(reset_peak_rss());
  LoadOptions options = quiet(4);
  LoadReport report;
  load_hf_weights(folder, config, layout, params.data(), options, &report);
  const Rss after = read_rss();
  const long growth_mb = (after.peak_kb - before.current_kb) / 1024;
  std::printf("[ memory ] load: %zu shards, %lu MB on disk (largest %lu MB), arena %zu MB, %d threads, peak RSS growth "
              "%ld MB, %.2f GB/s\n", files.size(), static_cast<unsigned long>(total >> 20),
              static_cast<unsigned long>(largest >> 20), floats * 4 >> 20, report.threads, growth_mb, report.gb_per_s());
  EXPECT_EQ(report.bytes_read, report.bytes_total);
  EXPECT_LT(growth_mb, static_cast<long>(largest >> 20) + 64);
  // Tighter: what grows is the pages in flight, at most one 16 MB piece per thread (plus stacks and slack).
  EXPECT_LT(growth_mb, 16L * report.threads + 16);
  // And the values are those saved (bf16 of the pattern), every one of them.
  size_t wrong = 0;
  for (const ParamInfo& info : layout.params())
    for (size_t i = info.offset; i < info.offset + info.numel; ++i)
      wrong += params[i] != bf16_to_f32(f32_to_bf16(pattern(i)));
  EXPECT_EQ(wrong, 0u);
}

}  // namespace
}  // namespace moetune
