// Why: see hf_names.h. Stacked gate/up parameters are split into their gate and up halves; fused experts either kept
// whole (Fused) or cut per expert (PerExpert).
#include "model/hf_names.h"

#include "core/error.h"

namespace moetune {

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip(const std::string& text, const std::string& suffix) { return text.substr(0, text.size() - suffix.size()); }

}  // namespace

std::vector<HfTensor> hf_tensors(const ModelConfig& config, const ParamLayout& layout, ExpertLayout expert_layout) {
  std::vector<HfTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, size_t offset) {
    size_t numel = 1;
    for (int64_t dim : shape) numel *= static_cast<size_t>(dim);
    out.push_back({std::move(name), std::move(shape), offset, numel});
  };
  const bool mixtral = config.family == Family::Mixtral;
  for (const ParamInfo& p : layout.params()) {
    if (ends_with(p.name, "gate_up_proj") && !ends_with(p.name, "experts.gate_up_proj")) {
      // Dense MLP or shared expert: (2I, H) -> gate_proj.weight (I, H) + up_proj.weight (I, H).
      const std::string base = strip(p.name, "gate_up_proj");
      const int64_t I = p.shape[0] / 2, H = p.shape[1];
      add(base + "gate_proj.weight", {I, H}, p.offset);
      add(base + "up_proj.weight", {I, H}, p.offset + static_cast<size_t>(I * H));
      continue;
    }
    const bool experts_gate_up = ends_with(p.name, "mlp.experts.gate_up_proj");
    const bool experts_down = ends_with(p.name, "mlp.experts.down_proj");
    const bool router = ends_with(p.name, "mlp.gate.weight");
    std::string name = p.name;
    if (mixtral && expert_layout == ExpertLayout::PerExpert && (experts_gate_up || experts_down || router)) {
      const size_t at = name.find("mlp.");
      name.replace(at, 4, "block_sparse_moe.");
    }
    if (expert_layout == ExpertLayout::Fused || !(experts_gate_up || experts_down)) {
      add(name, p.shape, p.offset);
      continue;
    }
    const std::string base = strip(name, experts_gate_up ? "gate_up_proj" : "down_proj");
    const int64_t E = p.shape[0], rows = p.shape[1], cols = p.shape[2];
    const size_t per_expert = static_cast<size_t>(rows * cols);
    for (int64_t e = 0; e < E; ++e) {
      const std::string prefix = str(base, e, ".");
      const size_t at = p.offset + static_cast<size_t>(e) * per_expert;
      if (experts_gate_up) {
        const int64_t I = rows / 2;
        add(prefix + (mixtral ? "w1.weight" : "gate_proj.weight"), {I, cols}, at);
        add(prefix + (mixtral ? "w3.weight" : "up_proj.weight"), {I, cols}, at + static_cast<size_t>(I * cols));
      } else {
        add(prefix + (mixtral ? "w2.weight" : "down_proj.weight"), {rows, cols}, at);
      }
    }
  }
  return out;
}

}  // namespace moetune
