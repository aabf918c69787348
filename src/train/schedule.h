// Why: learning-rate schedules with the exact formulas of Transformers' get_{constant,linear,cosine}_schedule_with_warmup,
// so a run configured like a Hugging Face Trainer run follows the same learning rates. `step` counts optimizer steps
// already taken (0 for the first update), as the PyTorch LambdaLR does.
#pragma once

#include <string>

namespace moetune {

enum class Schedule { Constant, Linear, Cosine };

Schedule parse_schedule(const std::string& name);  // "constant" | "linear" | "cosine"; throws Error otherwise
const char* schedule_name(Schedule schedule);

// Multiplier of the base learning rate for the update number `step` (0-based) of `total_steps`.
double lr_multiplier(Schedule schedule, long step, long warmup_steps, long total_steps);

}  // namespace moetune
