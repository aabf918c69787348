// Why: a checkpoint written by moetune must load back in Transformers (same tensor names as its save_pretrained) and in
// moetune (same numbers), a save must never leave a folder that looks complete but is not, and every way a checkpoint
// can disagree with its config.json must end as one line naming the file and the tensor. Bad checkpoints are made from
// copies of the golden fixtures with exactly one thing broken.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "api/model.h"
#include "test_util.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using test_util::copy_golden;
using test_util::error_of;
using test_util::golden_families;
using test_util::golden_folder;
using test_util::TempFolder;

const char* layout_name(ExpertLayout layout) { return layout == ExpertLayout::PerExpert ? "per-expert" : "fused"; }

bool same_bits(const Model& a, const Model& b) {
  return a.buffer_size() == b.buffer_size() &&
         std::memcmp(a.params(), b.params(), a.buffer_size() * sizeof(float)) == 0;
}

// All tensors of a saved model.safetensors have `dtype`.
void expect_file_dtype(const std::string& path, DType dtype) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const TensorEntry& entry : file.tensors())
    EXPECT_EQ(entry.dtype, dtype) << path << ": " << entry.name;
}

// --- round trips -----------------------------------------------------------------------------------------------------

TEST(CheckpointIo, RoundTripF32IsBitExactInBothLayouts) {
  for (const std::string& family : golden_families()) {
    const Model original = Model::from_pretrained(golden_folder(family));
    for (ExpertLayout layout : {ExpertLayout::PerExpert, ExpertLayout::Fused}) {
      SCOPED_TRACE(family + " " + layout_name(layout));
      TempFolder temp;
      const std::string out = temp.file("saved");
      SaveOptions options;
      options.expert_layout = layout;
      original.save_pretrained(out, options);
      expect_file_dtype(out + "/model.safetensors", DType::F32);

      const Model loaded = Model::from_pretrained(out);
      EXPECT_TRUE(same_bits(loaded, original));
      std::vector<float> params(loaded.buffer_size());
      EXPECT_EQ(load_hf_weights(out, loaded.config(), loaded.layout(), params.data()), layout);
    }
  }
}

TEST(CheckpointIo, RoundTripHalfPrecisionRoundsEachValueOnce) {
  for (const std::string& family : golden_families()) {
    const Model original = Model::from_pretrained(golden_folder(family));
    for (ExpertLayout layout : {ExpertLayout::PerExpert, ExpertLayout::Fused}) {
      for (DType dtype : {DType::BF16, DType::F16}) {
        SCOPED_TRACE(family + " " + layout_name(layout) + " " + dtype_name(dtype));
        TempFolder temp;
        const std::string out = temp.file("saved");
        original.save_pretrained(out, SaveOptions{layout, dtype, ""});
        expect_file_dtype(out + "/model.safetensors", dtype);
        EXPECT_EQ(test_util::read_json(out + "/config.json")["dtype"], dtype == DType::BF16 ? "bfloat16" : "float16");

        const Model loaded = Model::from_pretrained(out);
        ASSERT_EQ(loaded.buffer_size(), original.buffer_size());
        // Round-to-nearest: within half a unit in the last place of the 8-bit (bf16) / 11-bit (f16) significand.
        const double relative = dtype == DType::BF16 ? 0x1.0p-8 : 0x1.0p-11;
        const double absolute = dtype == DType::BF16 ? 0.0 : 0x1.0p-25;  // f16 subnormals
        size_t changed = 0, bad = 0;
        for (size_t i = 0; i < original.buffer_size(); ++i) {
          const double a = loaded.params()[i], b = original.params()[i];
          changed += a != b;
          if (std::fabs(a - b) > relative * std::fabs(b) + absolute && bad++ < 5)
            ADD_FAILURE() << "param " << i << ": saved " << b << ", loaded " << a;
        }
        EXPECT_EQ(bad, 0u);
        EXPECT_GT(changed, original.buffer_size() / 2);  // the values really went through half precision
        if (dtype == DType::BF16) {  // and exactly as PyTorch's .to(torch.bfloat16) rounds
          for (size_t i = 0; i < original.buffer_size(); ++i)
            ASSERT_EQ(loaded.params()[i], bf16_to_f32(f32_to_bf16(original.params()[i]))) << "param " << i;
        }
      }
    }
  }
}

TEST(CheckpointIo, PerExpertNamesEqualTransformersSavePretrained) {
  for (const std::string& family : golden_families()) {
    SCOPED_TRACE(family);
    TempFolder temp;
    Model::from_pretrained(golden_folder(family)).save_pretrained(temp.file("saved"));
    EXPECT_EQ(test_util::tensor_names(temp.file("saved/model.safetensors")),
              test_util::tensor_names(golden_folder(family) + "/model.safetensors"));
  }
}

TEST(CheckpointIo, FusedNamesEqualTransformersStateDict) {
  int compared = 0;
  for (const std::string& family : golden_families()) {
    const std::string fused = golden_folder(family) + "/fused/model.safetensors";
    if (!fs::exists(fused)) continue;
    SCOPED_TRACE(family);
    TempFolder temp;
    SaveOptions options;
    options.expert_layout = ExpertLayout::Fused;
    Model::from_pretrained(golden_folder(family)).save_pretrained(temp.file("saved"), options);
    EXPECT_EQ(test_util::tensor_names(temp.file("saved/model.safetensors")), test_util::tensor_names(fused));
    ++compared;
  }
  EXPECT_GE(compared, 1);
}

TEST(CheckpointIo, ConfigJsonIsWrittenWithDtype) {
  TempFolder temp;
  const std::string source = golden_folder("mixtral");
  Model::from_pretrained(source).save_pretrained(temp.file("saved"));
  nlohmann::json written = test_util::read_json(temp.file("saved/config.json"));
  EXPECT_EQ(written["dtype"], "float32");
  EXPECT_FALSE(written.contains("torch_dtype"));
  // Everything else is the source config as read.
  nlohmann::json expected = test_util::read_json(source + "/config.json");
  expected.erase("torch_dtype");
  expected["dtype"] = "float32";
  EXPECT_EQ(written, expected);
  // A config that still uses the v4 spelling "torch_dtype" is written with "dtype" only.
  nlohmann::json v4 = test_util::read_json(source + "/config.json");
  v4.erase("dtype");
  v4["torch_dtype"] = "bfloat16";
  Model model = Model::from_config(parse_config(v4, "v4/config.json"), 1);
  model.save_pretrained(temp.file("v4"), SaveOptions{ExpertLayout::PerExpert, DType::BF16, ""});
  written = test_util::read_json(temp.file("v4/config.json"));
  EXPECT_EQ(written["dtype"], "bfloat16");
  EXPECT_FALSE(written.contains("torch_dtype"));
}

TEST(CheckpointIo, SaveCopiesGenerationConfigOfTheSourceFolder) {
  TempFolder temp;
  const std::string source = golden_folder("olmoe");
  Model::from_pretrained(source).save_pretrained(temp.file("saved"));
  ASSERT_TRUE(fs::exists(source + "/generation_config.json"));
  EXPECT_EQ(test_util::read_text(temp.file("saved/generation_config.json")),
            test_util::read_text(source + "/generation_config.json"));
}

TEST(CheckpointIo, ShardedCheckpointLoads) {
  TempFolder temp;
  const std::string folder = copy_golden("qwen2_moe", temp.file("sharded"));
  const std::string single = folder + "/model.safetensors";
  nlohmann::json weight_map = nlohmann::json::object();
  const std::vector<std::string> names = test_util::tensor_names(single);
  // First half of the names into shard 1, the rest into shard 2.
  for (int shard = 1; shard <= 2; ++shard) {
    const std::string shard_name = "model-0000" + std::to_string(shard) + "-of-00002.safetensors";
    fs::copy_file(single, folder + "/" + shard_name);
    test_util::rewrite_safetensors(folder + "/" + shard_name, [&](TensorToWrite& tensor) {
      const size_t position = std::lower_bound(names.begin(), names.end(), tensor.name) - names.begin();
      const bool mine = (position < names.size() / 2) == (shard == 1);
      if (mine) weight_map[tensor.name] = shard_name;
      return mine;
    });
  }
  fs::remove(single);
  test_util::write_json(folder + "/model.safetensors.index.json", {{"metadata", {}}, {"weight_map", weight_map}});
  EXPECT_TRUE(same_bits(Model::from_pretrained(folder), Model::from_pretrained(golden_folder("qwen2_moe"))));
}

// --- atomic save -----------------------------------------------------------------------------------------------------

TEST(CheckpointIo, SavingOverACheckpointReplacesItWholly) {
  TempFolder temp;
  const std::string out = temp.file("ckpt");
  const Model first = Model::from_pretrained(golden_folder("qwen3_moe"));
  first.save_pretrained(out);
  // A stale shard index in the old folder would shadow the new model.safetensors if it survived the replacement.
  test_util::write_json(out + "/model.safetensors.index.json", {{"weight_map", {{"lm_head.weight", "gone.safetensors"}}}});
  test_util::write_text(out + "/notes.txt", "old");

  Model second = Model::from_config(first.config(), 42);
  ASSERT_FALSE(same_bits(first, second));
  second.save_pretrained(out, SaveOptions{ExpertLayout::Fused, DType::F32, ""});

  EXPECT_TRUE(same_bits(Model::from_pretrained(out), second));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out + "/notes.txt"));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});
  EXPECT_EQ(test_util::staging_leftovers(out), std::vector<std::string>{});
}

TEST(CheckpointIo, SaveToAFolderNameWithATrailingSlash) {
  TempFolder temp;
  const Model first = Model::from_pretrained(golden_folder("olmoe"));
  first.save_pretrained(temp.file("ckpt/"));
  EXPECT_TRUE(same_bits(Model::from_pretrained(temp.file("ckpt")), first));
  const Model second = Model::from_config(first.config(), 3);
  second.save_pretrained(temp.file("ckpt/"));  // over the first
  EXPECT_TRUE(same_bits(Model::from_pretrained(temp.file("ckpt")), second));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});
  EXPECT_EQ(test_util::staging_leftovers(temp.file("ckpt")), std::vector<std::string>{});
}

TEST(CheckpointIo, SaveNeverReplacesWhatIsNotACheckpoint) {
  TempFolder temp;
  const Model model = Model::from_pretrained(golden_folder("olmoe"));
  // A regular file at the target path.
  test_util::write_text(temp.file("notes"), "mine");
  EXPECT_MESSAGE_HAS(error_of([&] { model.save_pretrained(temp.file("notes")); }), temp.file("notes"));
  EXPECT_EQ(test_util::read_text(temp.file("notes")), "mine");
  // A folder with other things in it and no config.json.
  fs::create_directories(temp.file("home"));
  test_util::write_text(temp.file("home/thesis.tex"), "mine");
  EXPECT_MESSAGE_HAS(error_of([&] { model.save_pretrained(temp.file("home")); }), temp.file("home"), "config.json");
  EXPECT_EQ(test_util::read_text(temp.file("home/thesis.tex")), "mine");
  EXPECT_FALSE(fs::exists(temp.file("home/model.safetensors")));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});
  // An empty folder is fine.
  fs::create_directories(temp.file("empty"));
  model.save_pretrained(temp.file("empty"));
  EXPECT_TRUE(same_bits(Model::from_pretrained(temp.file("empty")), model));
}

TEST(CheckpointIo, SaveUnderARegularFileFailsAndLeavesNothing) {
  TempFolder temp;
  test_util::write_text(temp.file("blocker"), "a file, not a folder");
  const Model model = Model::from_pretrained(golden_folder("olmoe"));
  const std::string message = error_of([&] { model.save_pretrained(temp.file("blocker/run/final")); });
  EXPECT_MESSAGE_HAS(message, temp.file("blocker"));
  EXPECT_EQ(test_util::read_text(temp.file("blocker")), "a file, not a folder");
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(temp.path())) entries.push_back(entry.path().filename().string());
  EXPECT_EQ(entries, std::vector<std::string>{"blocker"});
}

TEST(CheckpointIo, SaveThatFailsMidwayKeepsThePreviousCheckpoint) {
  TempFolder temp;
  const std::string out = temp.file("ckpt");
  const Model first = Model::from_pretrained(golden_folder("qwen3_moe"));
  first.save_pretrained(out);
  // A source folder whose tokenizer.json cannot be copied: the save fails after the weights were written.
  const std::string source = temp.file("source");
  fs::create_directories(source + "/tokenizer.json");
  const Model second = Model::from_config(first.config(), 7);
  const std::string message = error_of([&] { second.save_pretrained(out, SaveOptions{ExpertLayout::PerExpert, DType::F32, source}); });
  EXPECT_MESSAGE_HAS(message, "tokenizer.json");
  EXPECT_TRUE(same_bits(Model::from_pretrained(out), first));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});

  // The same failure with no previous checkpoint leaves no folder at all.
  const std::string fresh = temp.file("fresh");
  error_of([&] { second.save_pretrained(fresh, SaveOptions{ExpertLayout::PerExpert, DType::F32, source}); });
  EXPECT_FALSE(fs::exists(fresh));
  EXPECT_EQ(test_util::staging_leftovers(temp.path()), std::vector<std::string>{});
}

TEST(CheckpointIo, SaveRejectsANonFloatingDtypeBeforeWriting) {
  TempFolder temp;
  const Model model = Model::from_pretrained(golden_folder("mixtral"));
  const std::string message =
      error_of([&] { model.save_pretrained(temp.file("out"), SaveOptions{ExpertLayout::PerExpert, DType::I32, ""}); });
  EXPECT_MESSAGE_HAS(message, "I32");
  EXPECT_FALSE(fs::exists(temp.file("out")));
  EXPECT_TRUE(fs::is_empty(temp.path()));
}

// --- load errors -----------------------------------------------------------------------------------------------------

// A copy of a golden checkpoint with its model.safetensors edited, and the error from_pretrained throws on it.
struct BrokenCheckpoint {
  TempFolder temp;
  std::string folder;
  std::string file;
  explicit BrokenCheckpoint(const std::string& family = "qwen3_moe")
      : folder(copy_golden(family, temp.file("ckpt"))), file(folder + "/model.safetensors") {}
  std::string load_error() const {
    return error_of([&] { Model::from_pretrained(folder); });
  }
};

TEST(CheckpointIo, MissingTensor) {
  BrokenCheckpoint checkpoint;
  const std::string name = "model.layers.1.mlp.experts.3.down_proj.weight";
  test_util::rewrite_safetensors(checkpoint.file, [&](TensorToWrite& t) { return t.name != name; });
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.folder, name, "missing");
}

TEST(CheckpointIo, MissingTensorInMixtralNaming) {
  BrokenCheckpoint checkpoint("mixtral");
  const std::string name = "model.layers.0.block_sparse_moe.gate.weight";
  test_util::rewrite_safetensors(checkpoint.file, [&](TensorToWrite& t) { return t.name != name; });
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.folder, name, "missing");
}

TEST(CheckpointIo, ExtraTensor) {
  BrokenCheckpoint checkpoint;
  const std::vector<float> values(4, 1.0f);
  const std::string name = "model.layers.1.mlp.experts.99.gate_proj.weight";
  test_util::rewrite_safetensors(checkpoint.file, [](TensorToWrite&) { return true; },
                                 {{name, DType::F32, {2, 2}, values.data(), 16}});
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file, name, "unexpected");
}

TEST(CheckpointIo, WrongShape) {
  BrokenCheckpoint checkpoint;
  const std::string name = "model.layers.2.self_attn.q_proj.weight";
  std::vector<int64_t> original;
  test_util::rewrite_safetensors(checkpoint.file, [&](TensorToWrite& t) {
    if (t.name == name) {
      original = t.shape;
      std::swap(t.shape[0], t.shape[1]);  // transposed: same bytes, wrong shape
    }
    return true;
  });
  ASSERT_EQ(original.size(), 2u);
  const std::string found = "[" + std::to_string(original[1]) + ", " + std::to_string(original[0]) + "]";
  const std::string expected = "[" + std::to_string(original[0]) + ", " + std::to_string(original[1]) + "]";
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file, name, found, expected);
}

TEST(CheckpointIo, IntegerDtype) {
  BrokenCheckpoint checkpoint("olmoe");
  const std::string name = "model.layers.0.self_attn.k_norm.weight";
  bool seen = false;
  test_util::rewrite_safetensors(checkpoint.file, [&](TensorToWrite& t) {
    if (t.name == name) {
      t.dtype = DType::I32;  // same element size as F32: only the dtype is wrong
      seen = true;
    }
    return true;
  });
  ASSERT_TRUE(seen);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file, name, "I32");
}

TEST(CheckpointIo, TruncatedSafetensors) {
  BrokenCheckpoint checkpoint;
  const auto size = fs::file_size(checkpoint.file);
  fs::resize_file(checkpoint.file, size - 100);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file);
  fs::resize_file(checkpoint.file, 20);  // inside the header
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file);
  fs::resize_file(checkpoint.file, 0);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file);
}

TEST(CheckpointIo, HostileSafetensorsHeader) {
  BrokenCheckpoint checkpoint;
  std::string bytes = test_util::read_text(checkpoint.file);
  // Header length of 2^60 bytes.
  std::string huge = bytes;
  for (int i = 0; i < 8; ++i) huge[i] = static_cast<char>((uint64_t{1} << 60) >> (8 * i));
  test_util::write_text(checkpoint.file, huge);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file);
  // A header that is not JSON.
  std::string garbage = bytes;
  garbage[8] = '!';
  test_util::write_text(checkpoint.file, garbage);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file);
}

TEST(CheckpointIo, IndexNamingAMissingShard) {
  BrokenCheckpoint checkpoint("mixtral");
  const std::string shard1 = "model-00001-of-00002.safetensors", shard2 = "model-00002-of-00002.safetensors";
  const std::string moved = "lm_head.weight";
  nlohmann::json weight_map = nlohmann::json::object();
  test_util::rewrite_safetensors(checkpoint.file, [&](TensorToWrite& t) {
    weight_map[t.name] = t.name == moved ? shard2 : shard1;
    return t.name != moved;
  });
  fs::rename(checkpoint.file, checkpoint.folder + "/" + shard1);
  const std::string index = checkpoint.folder + "/model.safetensors.index.json";
  test_util::write_json(index, {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}});
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), index, shard2, moved);
}

TEST(CheckpointIo, NoWeightsAtAll) {
  BrokenCheckpoint checkpoint;
  fs::remove(checkpoint.file);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.folder, "model.safetensors");
}

TEST(CheckpointIo, ConfigDisagreeingWithWeights) {
  // A config.json edited after the weights were written: every expert tensor now has the wrong shape.
  BrokenCheckpoint checkpoint("qwen3_moe");
  nlohmann::json config = test_util::read_json(checkpoint.folder + "/config.json");
  config["moe_intermediate_size"] = config["moe_intermediate_size"].get<int>() + 2;
  test_util::write_json(checkpoint.folder + "/config.json", config);
  EXPECT_MESSAGE_HAS(checkpoint.load_error(), checkpoint.file, "mlp.experts.", "shape");
}

TEST(CheckpointIo, TiedEmbeddingsLoadWithOrWithoutLmHead) {
  TempFolder temp;
  // Tie the embeddings of a golden checkpoint: lm_head.weight is then redundant (Transformers ignores it on load).
  const std::string with_head = copy_golden("qwen3_moe", temp.file("with_head"));
  nlohmann::json config = test_util::read_json(with_head + "/config.json");
  config["tie_word_embeddings"] = true;
  test_util::write_json(with_head + "/config.json", config);
  const Model tied = Model::from_pretrained(with_head);
  EXPECT_TRUE(tied.config().tie_word_embeddings);
  EXPECT_EQ(tied.layout().find("lm_head.weight"), nullptr);

  const std::string without_head = copy_golden("qwen3_moe", temp.file("without_head"));
  test_util::write_json(without_head + "/config.json", config);
  test_util::rewrite_safetensors(without_head + "/model.safetensors",
                                 [](TensorToWrite& t) { return t.name != "lm_head.weight"; });
  EXPECT_TRUE(same_bits(Model::from_pretrained(without_head), tied));

  // Saved, a tied model has no lm_head.weight (as Transformers' save_pretrained writes it), and loads back.
  tied.save_pretrained(temp.file("saved"));
  const std::vector<std::string> names = test_util::tensor_names(temp.file("saved/model.safetensors"));
  EXPECT_EQ(std::count(names.begin(), names.end(), "lm_head.weight"), 0);
  EXPECT_TRUE(same_bits(Model::from_pretrained(temp.file("saved")), tied));

  // Untied, the same checkpoint without lm_head.weight is missing a tensor.
  config["tie_word_embeddings"] = false;
  test_util::write_json(without_head + "/config.json", config);
  EXPECT_MESSAGE_HAS(error_of([&] { Model::from_pretrained(without_head); }), "lm_head.weight", "missing");
}

}  // namespace
}  // namespace moetune
