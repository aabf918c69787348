// Why: a run configured like a Hugging Face Trainer run must follow the same learning rates, so lr_multiplier is held
// to Transformers' get_{constant,linear,cosine}_schedule_with_warmup lambdas, transcribed below, and to hand-computed
// values at step 0, inside the warm-up, at its end, at the middle of the decay, at the last update and past the end.
// Tolerance 1e-12: both sides are a few double operations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "train/schedule.h"

namespace moetune {
namespace {

// transformers/optimization.py, num_cycles = 0.5 for cosine.
double hf_lambda(Schedule schedule, long step, long warmup, long total) {
  if (step < warmup) return static_cast<double>(step) / std::max(1.0, static_cast<double>(warmup));
  if (schedule == Schedule::Constant) return 1.0;
  const double rest = std::max(1.0, static_cast<double>(total - warmup));
  if (schedule == Schedule::Linear) return std::max(0.0, (total - step) / rest);
  const double progress = (step - warmup) / rest;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

TEST(CpuOpsSchedule, HandComputedValues) {
  // warm-up 10 of 110 steps: step 5 is half-way up, step 10 the peak, step 60 half-way down, step 109 the last update.
  const double kTol = 1e-12;
  for (Schedule s : {Schedule::Constant, Schedule::Linear, Schedule::Cosine}) {
    SCOPED_TRACE(schedule_name(s));
    EXPECT_NEAR(lr_multiplier(s, 0, 10, 110), 0.0, kTol);
    EXPECT_NEAR(lr_multiplier(s, 5, 10, 110), 0.5, kTol);
    EXPECT_NEAR(lr_multiplier(s, 10, 10, 110), 1.0, kTol);
  }
  EXPECT_NEAR(lr_multiplier(Schedule::Constant, 109, 10, 110), 1.0, kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Linear, 60, 10, 110), 0.5, kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Linear, 109, 10, 110), 0.01, kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Linear, 110, 10, 110), 0.0, kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 35, 10, 110), 0.5 + 0.25 * std::sqrt(2.0), kTol);  // a quarter: cos(pi/4)
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 60, 10, 110), 0.5, kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 109, 10, 110), 0.5 * (1.0 + std::cos(0.99 * M_PI)), kTol);
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 110, 10, 110), 0.0, kTol);
  // No warm-up: the first update runs at the full rate.
  for (Schedule s : {Schedule::Constant, Schedule::Linear, Schedule::Cosine})
    EXPECT_NEAR(lr_multiplier(s, 0, 0, 50), 1.0, kTol);
}

TEST(CpuOpsSchedule, MatchesTransformersLambdasAtEveryStep) {
  for (Schedule s : {Schedule::Constant, Schedule::Linear, Schedule::Cosine})
    for (long warmup : {0L, 1L, 7L})
      for (long total : {1L, 7L, 23L})
        for (long step = 0; step <= total + 1; ++step)
          EXPECT_NEAR(lr_multiplier(s, step, warmup, total), hf_lambda(s, step, warmup, total), 1e-12)
              << schedule_name(s) << " step " << step << " warmup " << warmup << " total " << total;
}

TEST(CpuOpsSchedule, NamesRoundTripAndUnknownThrows) {
  for (const char* name : {"constant", "linear", "cosine"}) EXPECT_STREQ(schedule_name(parse_schedule(name)), name);
  EXPECT_THROW(parse_schedule("cosine_with_restarts"), Error);
}

}  // namespace
}  // namespace moetune
