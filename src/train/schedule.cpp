// Why: see schedule.h.
#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moetune {

Schedule parse_schedule(const std::string& name) {
  if (name == "constant") return Schedule::Constant;
  if (name == "linear") return Schedule::Linear;
  if (name == "cosine") return Schedule::Cosine;
  fail("unknown learning-rate schedule \"", name, "\" (expected constant, linear or cosine)");
}

const char* schedule_name(Schedule schedule) {
  switch (schedule) {
    case Schedule::Constant: return "constant";
    case Schedule::Linear: return "linear";
    case Schedule::Cosine: return "cosine";
  }
  return "?";
}

double lr_multiplier(Schedule schedule, long step, long warmup_steps, long total_steps) {
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max(1L, warmup_steps));
  switch (schedule) {
    case Schedule::Constant:
      return 1.0;
    case Schedule::Linear:
      return std::max(0.0, static_cast<double>(total_steps - step) / static_cast<double>(std::max(1L, total_steps - warmup_steps)));
    case Schedule::Cosine: {
      const double progress =
          static_cast<double>(step - warmup_steps) / static_cast<double>(std::max(1L, total_steps - warmup_steps));
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    }
  }
  return 1.0;
}

}  // namespace moetune
