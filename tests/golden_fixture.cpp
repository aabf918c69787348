// Why: see golden_fixture.h.
#include "golden_fixture.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace moetune::testing {

GoldenFixture GoldenFixture::open(const std::string& family) {
  // The test binary may run from a copy of the tree elsewhere (the GPU machine): MOETUNE_SOURCE_DIR overrides.
  const char* root = std::getenv("MOETUNE_SOURCE_DIR");
  const std::string folder = std::string(root ? root : MOETUNE_SOURCE_DIR) + "/tests/golden/" + family;
  std::ifstream meta_file(folder + "/meta.json");
  if (!meta_file) fail(folder, "/meta.json: missing (run tools/golden/make_golden.py)");
  return GoldenFixture{folder, nlohmann::json::parse(meta_file), SafetensorsFile::open(folder + "/expected.safetensors")};
}

std::vector<float> GoldenFixture::floats(const std::string& name) const {
  const TensorEntry* entry = expected.find(name);
  if (!entry) fail(folder, "/expected.safetensors: no tensor ", name);
  std::vector<float> values(static_cast<size_t>(entry->numel()));
  read_as_f32(*entry, values.data());
  return values;
}

Batch GoldenFixture::batch(const std::string& ids_name, const std::string& labels_name, int index) const {
  const TensorEntry* ids = expected.find(ids_name);
  const TensorEntry* labels = expected.find(labels_name);
  if (!ids || !labels || ids->dtype != DType::I64 || labels->shape != ids->shape)
    fail(folder, ": bad fixture tensors ", ids_name, "/", labels_name);
  const size_t rank = ids->shape.size();
  Batch batch;
  batch.batch_size = static_cast<int>(ids->shape[rank - 2]);
  batch.seq_len = static_cast<int>(ids->shape[rank - 1]);
  const size_t count = static_cast<size_t>(batch.batch_size) * batch.seq_len;
  const size_t begin = index < 0 ? 0 : static_cast<size_t>(index) * count;
  for (size_t i = 0; i < count; ++i) {
    int64_t id, label;
    std::memcpy(&id, ids->data + 8 * (begin + i), 8);
    std::memcpy(&label, labels->data + 8 * (begin + i), 8);
    batch.input_ids.push_back(static_cast<int32_t>(id));
    batch.labels.push_back(static_cast<int32_t>(label));
  }
  return batch;
}

TrainOptions GoldenFixture::train_options() const {
  const nlohmann::json& optimizer = meta.at("optimizer");
  const nlohmann::json& schedule = meta.at("schedule");
  TrainOptions options;
  options.lr = optimizer.at("lr").get<double>();
  options.beta1 = optimizer.at("betas")[0].get<double>();
  options.beta2 = optimizer.at("betas")[1].get<double>();
  options.eps = optimizer.at("eps").get<double>();
  options.weight_decay = optimizer.at("weight_decay").get<double>();
  options.max_grad_norm = meta.at("clipping").at("max_grad_norm").get<double>();
  options.schedule = parse_schedule(schedule.at("name").get<std::string>());
  options.warmup_steps = schedule.at("num_warmup_steps").get<long>();
  options.total_steps = schedule.at("num_training_steps").get<long>();
  options.aux_loss = true;
  return options;
}

double max_error_relative(const float* actual, const float* expected, size_t count) {
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < count; ++i) {
    max_diff = std::fmax(max_diff, std::fabs(static_cast<double>(actual[i]) - expected[i]));
    max_ref = std::fmax(max_ref, std::fabs(static_cast<double>(expected[i])));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

double norm_error_relative(const float* actual, const float* expected, size_t count) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(actual[i]) - expected[i];
    diff += d * d;
    ref += static_cast<double>(expected[i]) * expected[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

}  // namespace moetune::testing
