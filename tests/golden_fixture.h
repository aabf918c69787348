// Why: shared reading of the golden fixtures that tools/golden/make_golden.py writes from Transformers (see
// tests/golden/README.md), and the per-tensor error measures the golden tests report.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "train/data.h"
#include "train/trainer.h"

namespace moetune::testing {

struct GoldenFixture {
  std::string folder;         // tests/golden/<family>
  nlohmann::json meta;        // meta.json
  SafetensorsFile expected;   // expected.safetensors

  static GoldenFixture open(const std::string& family);
  std::vector<float> floats(const std::string& name) const;  // any floating tensor, as fp32
  Batch batch(const std::string& ids_name, const std::string& labels_name, int index = -1) const;  // index: into [S, B, T]
  TrainOptions train_options() const;
};

// max |a - b| / max |b|: error relative to the tensor's scale.
double max_error_relative(const float* actual, const float* expected, size_t count);
// ||a - b|| / ||b||.
double norm_error_relative(const float* actual, const float* expected, size_t count);

}  // namespace moetune::testing
