// Why: see train_state.h.
#include "train/train_state.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/checkpoint_writer.h"
#include "io/safetensors.h"
#include "io/streaming_loader.h"
#include "parallel/expert_shard.h"

namespace moetune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "moetune-train-state";
constexpr int kVersion = 1;

// The step of a folder named exactly "step-<digits>"; -1 for anything else (staging and aside folders included).
long step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stol(name.substr(5));
}

// step-<N> folders of `checkpoints`, by step.
std::map<long, fs::path> step_folders(const fs::path& checkpoints) {
  std::map<long, fs::path> found;
  std::error_code error;
  for (fs::directory_iterator it(checkpoints, error), end; !error && it != end; it.increment(error)) {
    const long step = step_of(it->path().filename().string());
    if (step >= 0 && it->is_directory()) found[step] = it->path();
  }
  return found;
}

// Renames `folder` aside (so its final name disappears in one step), then deletes it.
void remove_checkpoint(const fs::path& folder) {
  const fs::path aside = folder.parent_path() / (folder.filename().string() + ".old-" + std::to_string(::getpid()));
  std::error_code error;
  fs::remove_all(aside, error);
  fs::rename(folder, aside, error);
  if (error) fail(folder.string(), ": cannot remove old checkpoint: ", error.message());
  fs::remove_all(aside, error);
}

// Staging (*.tmp-<pid>) and aside (*.old-<pid>) folders left by a process that was killed; ours are left alone.
void remove_leftovers(const fs::path& checkpoints) {
  const std::string own = "-" + std::to_string(::getpid());
  std::vector<fs::path> stale;
  std::error_code error;
  for (fs::directory_iterator it(checkpoints, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    const bool leftover = name.rfind("step-", 0) == 0 &&
                          (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos);
    const bool ours = name.size() > own.size() && name.compare(name.size() - own.size(), own.size(), own) == 0;
    if (!leftover || ours) continue;
    stale.push_back(it->path());
  }
  for (const fs::path& path : stale) fs::remove_all(path, error);
}

json options_json(const CheckpointRecord& record) {
  const TrainOptions& o = record.options;
  return {
      {"format", kFormat},
      {"version", kVersion},
      {"step", record.step},
      {"optimizer",
       {{"name", "adamw"}, {"lr", o.lr}, {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps},
        {"weight_decay", o.weight_decay}, {"max_grad_norm", o.max_grad_norm}}},
      {"schedule", {{"name", schedule_name(o.schedule)}, {"warmup_steps", o.warmup_steps}, {"total_steps", o.total_steps}}},
      {"aux_loss", o.aux_loss},
      {"batch", {{"batch_size", record.batch_size}, {"seq_len", record.seq_len}, {"grad_accum", record.grad_accum}}},
      {"sampler",
       {{"epoch", record.sampler.epoch}, {"position", record.sampler.position}, {"seed", record.sampler.seed},
        {"shuffle", record.sampler.shuffle}, {"dataset_size", record.sampler.dataset_size}}},
      {"progress", {{"tokens_seen", record.tokens_seen}, {"elapsed_s", record.elapsed_s}}},
      {"state_file", kTrainStateTensors},
      {"run", record.run},
  };
}

// Typed access to trainer_state.json with errors naming the file and the field ("sampler.epoch").
class Fields {
 public:
  Fields(const json& root, std::string file) : root_(root), file_(std::move(file)) {}

  const json& at(const std::string& dotted, json::value_t kind) const {
    const json* node = &root_;
    std::stringstream parts(dotted);
    std::string part;
    while (std::getline(parts, part, '.')) {
      if (!node->is_object() || !node->contains(part)) fail(file_, ": field \"", dotted, "\" is missing");
      node = &(*node)[part];
    }
    const bool ok = kind == json::value_t::number_float ? node->is_number()
                    : kind == json::value_t::number_unsigned ? node->is_number_unsigned()
                    : kind == json::value_t::number_integer  ? node->is_number_integer()
                                                             : node->type() == kind;
    if (!ok) fail(file_, ": field \"", dotted, "\" has the wrong type (", node->type_name(), "): ", node->dump());
    return *node;
  }
  double number(const std::string& dotted) const { return at(dotted, json::value_t::number_float).get<double>(); }
  int64_t integer(const std::string& dotted, int64_t min) const {
    const int64_t value = at(dotted, json::value_t::number_integer).get<int64_t>();
    if (value < min) fail(file_, ": field \"", dotted, "\" is ", value, ", must be >= ", min);
    return value;
  }
  uint64_t unsigned_integer(const std::string& dotted) const {
    return at(dotted, json::value_t::number_unsigned).get<uint64_t>();
  }
  bool boolean(const std::string& dotted) const { return at(dotted, json::value_t::boolean).get<bool>(); }
  std::string text(const std::string& dotted) const { return at(dotted, json::value_t::string).get<std::string>(); }

 private:
  const json& root_;
  std::string file_;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// <step_folder>/trainer_state.safetensors, opened (its header validated) and its metadata checked: a moetune optimizer
// state of step `expected_step`.
SafetensorsFile open_train_state(const std::string& step_folder, long expected_step) {
  const std::string path = (fs::path(step_folder) / kTrainStateTensors).string();
  if (!fs::exists(path)) fail(path, ": missing (the optimizer state of the checkpoint)");
  SafetensorsFile file = SafetensorsFile::open(path);
  const auto& metadata = file.metadata();
  const auto format = metadata.find("format");
  if (format == metadata.end() || format->second != kFormat)
    fail(path, ": metadata \"format\" is not \"", kFormat, "\" (not a moetune optimizer state)");
  const auto step = metadata.find("step");
  if (step == metadata.end() || step->second != std::to_string(expected_step))
    fail(path, ": metadata \"step\" is ", step == metadata.end() ? "missing" : "\"" + step->second + "\"", ", but ",
         kTrainStateJson, " says step ", expected_step, " (files from different checkpoints?)");
  return file;
}

// The optimizer state's tensors: "<prefix><parameter name>" for each moment, and the arena it comes from or goes to.
struct Moment {
  const char* prefix;
  SourceArena arena;
};
constexpr std::array<Moment, 2> kMoments = {{{"exp_avg.", SourceArena::ExpAvg}, {"exp_avg_sq.", SourceArena::ExpAvgSq}}};

// Where the values of a training checkpoint go while it is read: one offset space, the three full-layout arenas of
// SourceArena laid end to end (arena k from k x the layout's total_floats()), so that weights and moments stream in
// one pass through one sink.
size_t arena_offset(SourceArena arena, size_t offset, const ParamLayout& full) {
  return static_cast<size_t>(arena) * full.total_floats() + offset;
}

// The moments of the optimizer state `file`, validated against `layout` (the whole model's): every "exp_avg.<name>"
// and "exp_avg_sq.<name>" present, F32, with its parameter's shape, and nothing else in the file. Destinations as
// arena_offset places them; each named after its moment, so that the owned-experts filter sees its expert.
std::vector<TensorRead> moment_reads(const SafetensorsFile& file, const ParamLayout& layout) {
  const std::string& path = file.path();
  std::vector<TensorRead> reads;
  for (const Moment& moment : kMoments) {
    for (const ParamInfo& info : layout.params()) {
      const std::string name = moment.prefix + info.name;
      const TensorEntry* entry = file.find(name);
      if (!entry) fail(path, ": tensor ", name, " is missing (optimizer state of another model?)");
      if (entry->dtype != DType::F32) fail(path, ": tensor ", name, " has dtype ", dtype_name(entry->dtype), ", expected F32");
      if (entry->shape != info.shape)
        fail(path, ": tensor ", name, " has shape ", shape_text(entry->shape), ", the model's parameter has ",
             shape_text(info.shape));
      reads.push_back({HfTensor{name, info.shape, arena_offset(moment.arena, info.offset, layout), info.numel}, entry});
    }
  }
  if (file.tensors().size() != reads.size())
    for (const TensorEntry& entry : file.tensors()) {
      const bool moment = std::any_of(kMoments.begin(), kMoments.end(),
                                      [&](const Moment& m) { return entry.name.rfind(m.prefix, 0) == 0; });
      const std::string param = moment ? entry.name.substr(entry.name.find('.') + 1) : "";
      if (!moment || !layout.find(param)) fail(path, ": unexpected tensor ", entry.name, " (not a parameter of the model)");
    }
  return reads;
}

// Whether `held` is the model `full` or an expert shard of it: once unsharded, the same parameters, the same shapes.
bool is_part_of(const ModelConfig& held, const ModelConfig& full) {
  const ParamLayout a(parallel::unsharded_config(held)), b(full);
  if (a.params().size() != b.params().size()) return false;
  for (size_t i = 0; i < a.params().size(); ++i)
    if (a.params()[i].name != b.params()[i].name || a.params()[i].shape != b.params()[i].shape) return false;
  return true;
}

// Receives pieces placed by arena_offset and writes them into a process's own arenas (SourceArena order; null: not
// read), moved to its layout by `map` (null: the full layout itself).
class HeldArenasSink final : public TensorSink {
 public:
  HeldArenasSink(size_t full_floats, const parallel::ShardOffsetMap* map, std::array<float*, kSourceArenas> arenas)
      : full_floats_(full_floats), map_(map), arenas_(arenas) {
    MT_ASSERT(full_floats > 0);
  }
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override {
    const size_t arena = dest.offset / full_floats_;
    MT_ASSERT(arena < arenas_.size() && arenas_[arena] != nullptr);
    HfTensor moved = dest;
    moved.offset = dest.offset % full_floats_;
    if (map_) moved.offset = map_->to_shard(moved.offset, moved.numel);
    HostF32Sink(arenas_[arena]).write(moved, src, worker);
  }

 private:
  size_t full_floats_;
  const parallel::ShardOffsetMap* map_;
  std::array<float*, kSourceArenas> arenas_;
};

}  // namespace

std::string checkpoint_folder_name(long step) { return "step-" + std::to_string(step); }

std::string write_checkpoint(const std::string& checkpoints, const Model& model, const TrainState& state,
                             CheckpointRecord record, const CheckpointWriteOptions& options) {
  const size_t floats = model.buffer_size();
  if (state.exp_avg.size() != floats || state.exp_avg_sq.size() != floats)
    fail("checkpoint: optimizer moments of ", state.exp_avg.size(), " and ", state.exp_avg_sq.size(),
         " values do not match the model's ", floats);
  CheckpointWriteOptions with_source = options;
  if (with_source.copy_files_from.empty()) with_source.copy_files_from = model.source_folder();
  const std::vector<HeldRun> held = {{SourceArena::Params, 0, floats, model.params()},
                                     {SourceArena::ExpAvg, 0, floats, state.exp_avg.data()},
                                     {SourceArena::ExpAvgSq, 0, floats, state.exp_avg_sq.data()}};
  return write_checkpoint(checkpoints, model.config(), held, state.step, std::move(record), with_source, SaveRanks{});
}

std::string write_checkpoint(const std::string& checkpoints, const ModelConfig& config,
                             const std::vector<HeldRun>& held, long step, CheckpointRecord record,
                             const CheckpointWriteOptions& options, const SaveRanks& ranks) {
  if (options.keep_last < 0) fail("checkpoint: keep_last is ", options.keep_last, ", must be >= 0");
  record.step = step;
  const ParamLayout layout(config);
  SaveOptions weights;  // fp32, per-expert: the exact weights, in a folder Transformers loads
  weights.copy_files_from = options.copy_files_from;
  FolderPlan plan = plan_hf_checkpoint(config, layout, weights);
  std::vector<SourcedTensor> moments;
  moments.reserve(2 * layout.params().size());
  for (const Moment& moment : kMoments)
    for (const ParamInfo& info : layout.params())
      moments.push_back({moment.prefix + info.name, DType::F32, info.shape, moment.arena, info.offset, info.numel});
  plan.tensor_files.push_back(
      plan_tensor_file(kTrainStateTensors, moments, {{"format", kFormat}, {"step", std::to_string(step)}}));
  plan.text_files.emplace_back(kTrainStateJson, options_json(record).dump(2) + "\n");

  const fs::path root = fs::absolute(fs::path(checkpoints)).lexically_normal();
  FolderHooks hooks;
  hooks.before = [&](const std::string&) {
    std::error_code error;
    fs::create_directories(root, error);
    if (error) fail(root.string(), ": cannot create checkpoints folder: ", error.message());
    remove_leftovers(root);
  };
  // Prune only once the new checkpoint is in place: any later step (a timeline abandoned when an earlier checkpoint
  // was resumed), then the oldest beyond keep_last.
  hooks.after = [&](const std::string&) {
    std::map<long, fs::path> existing = step_folders(root);
    for (auto it = existing.upper_bound(step); it != existing.end(); ++it) remove_checkpoint(it->second);
    existing.erase(existing.upper_bound(step), existing.end());
    if (options.keep_last > 0)
      while (existing.size() > static_cast<size_t>(options.keep_last)) {
        remove_checkpoint(existing.begin()->second);
        existing.erase(existing.begin());
      }
  };
  hooks.after_file = options.after_file;
  const fs::path target = root / checkpoint_folder_name(step);
  write_folder(target.string(), plan, held, ranks, hooks);
  return target.string();
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path folder(path);
  std::error_code error;
  if (!fs::is_directory(folder, error)) fail(path, ": no such checkpoint folder");
  if (fs::exists(folder / kTrainStateJson) || fs::exists(folder / "config.json") || step_of(folder.filename().string()) >= 0)
    return path;
  for (const fs::path& checkpoints : {folder, folder / "checkpoints"}) {
    const std::map<long, fs::path> found = step_folders(checkpoints);
    if (!found.empty()) return found.rbegin()->second.string();
  }
  fail(path, ": no checkpoint in it (expected a step-<N> folder, or a folder holding step-<N> folders or checkpoints/)");
}

CheckpointRecord read_checkpoint_record(const std::string& step_folder) {
  const std::string path = (fs::path(step_folder) / kTrainStateJson).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": missing (not a moetune training checkpoint, or an incomplete one)");
  std::stringstream text;
  text << in.rdbuf();
  const json root = json(parse_json_strict(text.str(), path));
  if (!root.is_object()) fail(path, ": not a JSON object");
  const Fields fields(root, path);
  if (fields.text("format") != kFormat) fail(path, ": field \"format\" is not \"", kFormat, "\"");
  if (fields.integer("version", 0) != kVersion)
    fail(path, ": field \"version\" is ", root["version"].dump(), "; this moetune reads version ", kVersion);

  CheckpointRecord record;
  record.step = fields.integer("step", 0);
  TrainOptions& o = record.options;
  if (fields.text("optimizer.name") != "adamw") fail(path, ": field \"optimizer.name\" is not \"adamw\"");
  o.lr = fields.number("optimizer.lr");
  o.beta1 = fields.number("optimizer.beta1");
  o.beta2 = fields.number("optimizer.beta2");
  o.eps = fields.number("optimizer.eps");
  o.weight_decay = fields.number("optimizer.weight_decay");
  o.max_grad_norm = fields.number("optimizer.max_grad_norm");
  try {
    o.schedule = parse_schedule(fields.text("schedule.name"));
  } catch (const Error& bad) {
    fail(path, ": field \"schedule.name\": ", bad.what());
  }
  o.warmup_steps = fields.integer("schedule.warmup_steps", 0);
  o.total_steps = fields.integer("schedule.total_steps", 1);
  o.aux_loss = fields.boolean("aux_loss");
  record.batch_size = static_cast<int>(fields.integer("batch.batch_size", 1));
  record.seq_len = static_cast<int>(fields.integer("batch.seq_len", 2));
  record.grad_accum = static_cast<int>(fields.integer("batch.grad_accum", 1));
  record.sampler.epoch = fields.integer("sampler.epoch", 0);
  record.sampler.position = static_cast<size_t>(fields.integer("sampler.position", 0));
  record.sampler.seed = fields.unsigned_integer("sampler.seed");
  record.sampler.shuffle = fields.boolean("sampler.shuffle");
  record.sampler.dataset_size = static_cast<size_t>(fields.integer("sampler.dataset_size", 1));
  if (record.sampler.position >= record.sampler.dataset_size)
    fail(path, ": field \"sampler.position\" is ", record.sampler.position, ", outside the dataset of ",
         record.sampler.dataset_size, " samples");
  record.tokens_seen = fields.integer("progress.tokens_seen", 0);
  record.elapsed_s = fields.number("progress.elapsed_s");
  record.run = fields.at("run", json::value_t::object);
  return record;
}

TrainState read_train_state(const std::string& step_folder, const ParamLayout& layout, long expected_step) {
  const SafetensorsFile file = open_train_state(step_folder, expected_step);
  TrainState state;
  state.step = expected_step;
  state.exp_avg.assign(layout.total_floats(), 0.0f);
  state.exp_avg_sq.assign(layout.total_floats(), 0.0f);
  HeldArenasSink sink(layout.total_floats(), nullptr, {nullptr, state.exp_avg.data(), state.exp_avg_sq.data()});
  LoadOptions options;
  options.progress = false;
  stream_tensors({&file}, moment_reads(file, layout), sink, options);
  return state;
}

// The tensor files of an opened checkpoint, each header validated; `reads` point into them.
struct CheckpointFiles {
  SafetensorsCheckpoint weights;
  SafetensorsFile moments;
  std::vector<TensorRead> reads;  // the weights' (full layout), then the moments' (arena_offset places them)
};

CheckpointInfo open_checkpoint(const std::string& path) {
  const std::string folder = resolve_checkpoint(path);
  if (!fs::exists(fs::path(folder) / "config.json"))
    fail((fs::path(folder) / "config.json").string(), ": missing (not a checkpoint folder, or an incomplete one)");
  CheckpointRecord record = read_checkpoint_record(folder);
  ModelConfig config = load_config(folder);
  const ParamLayout layout(config);
  auto files = std::make_shared<CheckpointFiles>(
      CheckpointFiles{SafetensorsCheckpoint::open(folder), open_train_state(folder, record.step), {}});
  files->reads = hf_reads(folder, files->weights, config, layout);
  const std::vector<TensorRead> moments = moment_reads(files->moments, layout);
  files->reads.insert(files->reads.end(), moments.begin(), moments.end());
  return CheckpointInfo{folder, std::move(config), std::move(record), std::move(files)};
}

CheckpointValues read_checkpoint_values(const CheckpointInfo& checkpoint, const ModelConfig& held,
                                        const LoadOptions& options, LoadReport* report) {
  const ModelConfig& full = checkpoint.config;
  if (!checkpoint.files) fail(checkpoint.folder, ": the checkpoint's files were closed before its values were read");
  if (!is_part_of(held, full))
    fail(checkpoint.folder, ": the layout to read (a ", held.architecture, " of ", held.num_layers,
         " layers) is not of the model of the checkpoint's config.json");
  const parallel::ShardOffsetMap map(full, held);  // the identity when `held` is the whole model
  std::vector<const SafetensorsFile*> files;
  for (const SafetensorsFile& file : checkpoint.files->weights.files()) files.push_back(&file);
  files.push_back(&checkpoint.files->moments);

  const size_t held_floats = map.shard_layout().total_floats();
  CheckpointValues values;
  values.params.assign(held_floats, 0.0f);
  values.state.step = checkpoint.record.step;
  values.state.exp_avg.assign(held_floats, 0.0f);
  values.state.exp_avg_sq.assign(held_floats, 0.0f);
  HeldArenasSink sink(map.full_layout().total_floats(), &map,
                      {values.params.data(), values.state.exp_avg.data(), values.state.exp_avg_sq.data()});
  LoadOptions held_options = options;
  held_options.owns_expert = parallel::held_experts_filter(held);
  const LoadReport result = stream_tensors(files, checkpoint.files->reads, sink, held_options);
  if (report) *report = result;
  return values;
}

LoadedCheckpoint load_checkpoint(const std::string& path) {
  CheckpointInfo checkpoint = open_checkpoint(path);
  CheckpointValues values = read_checkpoint_values(checkpoint, checkpoint.config);
  Model model = Model::from_values(checkpoint.config, std::move(values.params), checkpoint.folder);
  return LoadedCheckpoint{checkpoint.folder, std::move(model), std::move(values.state), std::move(checkpoint.record)};
}

}  // namespace moetune
