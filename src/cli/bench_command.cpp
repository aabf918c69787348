// Why: `moetune bench`: training throughput of the CUDA engine on synthetic tokens, from a named geometry or a
// config.json, with random weights: tokens/s, model TFLOP/s (train/flops.h), MFU against the bf16 matrix peak measured
// in the same run, device memory, and where the step time goes (CUDA events per phase).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/geometries.h"
#include "train/flops.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/gemm.h"
#include "parallel/expert_shard.h"
#include "parallel/nccl_comm.h"
#include "parallel/topology.h"
#endif

namespace moetune::cli {

namespace {

Args bench_args() {
  return Args("bench", "Measures training throughput on the GPU (bf16, synthetic tokens, random weights).",
              {
                  {"geometry", "NAME", "qwen3-30b-a3b-slice", "qwen3-30b-a3b-slice, qwen3-30b-a3b, olmoe-1b-7b or tiny"},
                  {"config", "PATH", "", "a config.json (or a folder holding one) instead of --geometry"},
                  {"layers", "N", "0", "override the number of layers (0: the geometry's)"},
                  {"seq-len", "N", "4096", "tokens per sequence"},
                  {"batch-size", "N", "1", "sequences per step"},
                  {"warmup", "N", "2", "steps before timing"},
                  {"steps", "N", "5", "timed steps"},
                  {"recipe", "bf16|mixed", "bf16", "bf16: bf16 params/grads/AdamW states; mixed: fp32 master weights and states"},
                  {"lr", "X", "1e-5", "learning rate"},
                  {"max-grad-norm", "X", "0", "gradient clipping (0: off, as in the baseline)"},
                  {"fused-optimizer", "on|off", "on", "apply AdamW per gradient group during the backward pass and "
                                                       "reuse gradient memory (needs --max-grad-norm 0)"},
                  {"expert-step", "auto|in-gemm|optimizer", "auto",
                   "with the fused step: AdamW of the routed experts inside their weight-gradient GEMM (their "
                   "gradients are never stored; needs recipe bf16, sm90 or moetune expert GEMMs, no --dp > 1 and no "
                   "--zero 1, else the optimizer stream is used), or on the optimizer stream with the other "
                   "parameters; auto: in the GEMM unless --ep > 1. The shape line says which ran"},
                  {"aux-loss", "on|off|config", "config", "router load-balancing loss"},
                  {"grouped-gemm", "sm90|moetune|cublas", "sm90", "expert GEMMs: the Hopper wgmma kernel (CUTLASS), "
                                                           "moetune's portable kernel (both: device-side sizes) or "
                                                           "cuBLAS's grouped GEMM"},
                  {"recompute", "on|off", "off", "per-layer activation recompute: keep only each layer's input and "
                                                 "re-run its forward before its backward (less memory, more time)"},
                  {"ep", "N", "1", "expert parallelism: experts split over N GPUs (one process per GPU: moetune launch, "
                                   "torchrun, srun or mpirun)"},
                  {"dp", "N", "0", "data parallelism over N groups (0: the processes / --ep)"},
                  {"expert-capacity", "X", "0", "with --ep: rows a GPU's experts can take, in multiples of the rows "
                                                "it routes (0: the worst case, --ep)"},
                  {"ep-exchange", "nccl|nvlink", "nccl", "with --ep: how rows move between GPUs: NCCL send/receive, or "
                                                       "one kernel writing into the owner's buffers over NVLink"},
                  {"ep-overlap", "on|off", "on", "with --ep: in the backward pass, return the experts' input "
                                                 "gradients to their GPUs while the experts' gate_up weight gradient "
                                                 "runs (sm90 and moetune expert GEMMs); off: one after the other"},
                  {"zero", "0|1", "0", "several processes: 1 shards the AdamW moments (and --recipe mixed's fp32 "
                                       "master weights) over the GPUs sharing each parameter (ZeRO-1: gradients "
                                       "reduce-scattered, parameters all-gathered); no effect with one process"},
                  {"json", "FILE", "", "also write the results as JSON to FILE (rank 0)"},
              });
}

}  // namespace

int bench_command(int argc, char** argv) {
  Args args = bench_args();
  if (!args.parse(argc, argv)) return 0;
#ifndef MOETUNE_HAVE_CUDA
  fail("this moetune was built without CUDA; bench needs the CUDA backend");
#else
  ModelConfig config;
  if (args.given("config")) {
    std::string path = args.text("config");
    if (std::filesystem::is_directory(path)) path += "/config.json";
    std::ifstream file(path);
    if (!file) fail(path, ": cannot open");
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(file);
    } catch (const nlohmann::json::exception& error) {
      fail(path, ": not valid JSON: ", error.what());
    }
    if (args.integer("layers") > 0) json["num_hidden_layers"] = args.integer("layers");
    config = parse_config(json, path);
  } else {
    config = named_geometry(args.text("geometry"), static_cast<int>(args.integer("layers")));
  }
  const int seq_len = static_cast<int>(args.integer("seq-len"));
  const int batch_size = static_cast<int>(args.integer("batch-size"));
  const int warmup = static_cast<int>(args.integer("warmup")), steps = static_cast<int>(args.integer("steps"));
  if (seq_len < 2 || batch_size < 1 || warmup < 0 || steps < 1)
    throw UsageError{"moetune bench: --seq-len >= 2, --batch-size >= 1, --warmup >= 0, --steps >= 1"};
  const cuda::Recipe recipe = cuda::parse_recipe(args.text("recipe"));
  const long zero = args.integer("zero");
  if (zero != 0 && zero != 1) throw UsageError{"moetune bench: --zero must be 0 or 1"};
  const std::string overlap = args.text("ep-overlap");
  if (overlap != "on" && overlap != "off") throw UsageError{"moetune bench: --ep-overlap must be on or off"};
  if (!is_grouped_gemm_backend(args.text("grouped-gemm")))
    throw UsageError{"moetune bench: --grouped-gemm must be sm90, moetune or cublas"};

  // Many GPUs: one process per GPU; the communicators pick this process's device before anything is allocated.
  const parallel::ProcessGroupInfo group = parallel::detect_process_group();
  const parallel::ParallelLayout layout = parallel::make_parallel_layout(
      static_cast<int>(args.integer("ep")), static_cast<int>(args.integer("dp")), group, config.num_experts);
  parallel::EpDpComms comms;
  if (group.world_size > 1) comms = parallel::ep_dp_comms(parallel::NcclComm::world(group), layout);
  const ModelConfig full_config = config;
  if (layout.ep > 1) {
    const parallel::ExpertRange range = layout.owned_experts(group.rank);
    config = parallel::expert_shard_config(config, range.begin, range.count());
  }
  const bool rank0 = group.rank == 0;

  size_t free_start = 0, total_memory = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_start, &total_memory));

  // The bf16 matrix peak of this GPU, measured now (8192^3 GEMMs).
  double peak_tflops = 0.0;
  {
    const int n = 8192;
    cuda::DeviceBuffer<cuda::bf16> a(static_cast<size_t>(n) * n), b(static_cast<size_t>(n) * n), c(static_cast<size_t>(n) * n);
    a.zero();
    b.zero();
    cuda::Gemm gemm(nullptr);
    for (int i = 0; i < 3; ++i) gemm.matmul(false, true, n, n, n, a.data(), n, b.data(), n, c.data(), n, false);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto start = std::chrono::steady_clock::now();
    const int reps = 20;
    for (int i = 0; i < reps; ++i) gemm.matmul(false, true, n, n, n, a.data(), n, b.data(), n, c.data(), n, false);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    peak_tflops = 2.0 * n * static_cast<double>(n) * n * reps / seconds / 1e12;
  }

  TrainOptions options;
  options.lr = args.number("lr");
  options.total_steps = warmup + steps;
  options.schedule = Schedule::Constant;
  options.max_grad_norm = args.number("max-grad-norm");
  const std::string aux = args.text("aux-loss");
  options.aux_loss = aux == "on" || (aux == "config" && config.output_router_logits);

  if (rank0)
    std::fprintf(stderr, "bench: %s, %d layers, seq %d x batch %d per GPU, recipe %s, EP %d x DP %d; building...\n",
                 config.architecture.c_str(), config.num_layers, seq_len, batch_size, cuda::recipe_name(recipe),
                 layout.ep, layout.dp);
  cuda::GpuOptions gpu;
  gpu.recipe = recipe;
  gpu.seed = 1;
  gpu.fused_optimizer = args.text("fused-optimizer") == "on";
  gpu.grouped_gemm = cuda::parse_grouped_gemm_backend(args.text("grouped-gemm"));
  if (!gpu.fused_optimizer && args.text("fused-optimizer") != "off")
    throw UsageError{"moetune bench: --fused-optimizer must be on or off"};
  const std::string expert_step = args.text("expert-step");
  if (expert_step != "auto" && expert_step != "in-gemm" && expert_step != "optimizer")
    throw UsageError{"moetune bench: --expert-step must be auto, in-gemm or optimizer"};
  gpu.expert_step = cuda::parse_expert_step_place(expert_step);
  const bool recompute = args.text("recompute") == "on";
  if (!recompute && args.text("recompute") != "off") throw UsageError{"moetune bench: --recompute must be on or off"};
  gpu.recompute = recompute;
  gpu.zero_stage = static_cast<int>(zero);
  if (zero == 1 && group.world_size == 1 && rank0)
    std::fprintf(stderr, "bench: note: --zero 1 has no effect in a single process (nothing to shard over)\n");
  if (group.world_size > 1) {
    gpu.world = &comms.world;
    gpu.expert_group = layout.ep > 1 ? &comms.ep : nullptr;
    gpu.expert_replicas = &comms.dp;
    gpu.expert_capacity = args.number("expert-capacity");
    const std::string exchange = args.text("ep-exchange");
    if (exchange != "nccl" && exchange != "nvlink") throw UsageError{"moetune bench: --ep-exchange must be nccl or nvlink"};
    gpu.expert_exchange = exchange == "nvlink" ? cuda::ExchangeBackend::NvlinkDirect : cuda::ExchangeBackend::Nccl;
    gpu.overlap_exchange = overlap == "on";
  }
  cuda::GpuTrainer trainer(config, nullptr, options, gpu, batch_size, seq_len);
  if (trainer.engine().recompute() != recompute)
    fail("moetune bench: --recompute ", recompute ? "on" : "off", " did not reach the engine (GpuOptions::recompute)");

  std::mt19937_64 generator(7 + group.rank);  // every rank its own tokens
  Batch batch;
  batch.batch_size = batch_size;
  batch.seq_len = seq_len;
  for (int i = 0; i < batch_size * seq_len; ++i) batch.input_ids.push_back(static_cast<int32_t>(generator() % config.vocab_size));
  batch.labels = batch.input_ids;

  for (int s = 0; s < warmup; ++s) trainer.step(batch);
  trainer.engine().enable_timing(true);
  trainer.engine().reset_timing();
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto start = std::chrono::steady_clock::now();
  double last_loss = 0.0;
  for (int s = 0; s < steps; ++s) last_loss = trainer.step(batch).loss;
  const auto phases = trainer.engine().phase_ms();
  CUDA_CHECK(cudaDeviceSynchronize());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  size_t free_end = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_end, &total_memory));

  if (!rank0) return 0;
  // What the engine does, not only what was asked: the overlap needs an exchange (--ep > 1) and the sm90 or moetune
  // expert GEMMs (the engine falls back to cuBLAS's for widths that are not multiples of 64).
  const bool ep_overlap = trainer.engine().overlaps_exchange();
  const double tokens = static_cast<double>(steps) * batch_size * seq_len;  // per GPU
  const double tokens_per_s = tokens / seconds;
  const double flops_per_token = training_flops_per_token(full_config, seq_len);
  const double tflops = tokens_per_s * flops_per_token / 1e12;
  const double used_gib = static_cast<double>(free_start - free_end) / (1 << 30);
  std::printf("model        %s, %d layers, %.2f B parameters (%.2f B on this GPU), %.2f GFLOP/token (train)\n",
              config.architecture.c_str(), config.num_layers, ParamLayout(full_config).parameter_count() / 1e9,
              trainer.layout().parameter_count() / 1e9, flops_per_token / 1e9);
  if (group.world_size > 1)
    std::printf("parallel     %d GPUs: EP %d x DP %d (exchange %s, overlap %s)%s; tokens/s, TFLOP/s and memory below "
                "are per GPU\n",
                group.world_size, layout.ep, layout.dp, args.text("ep-exchange").c_str(), ep_overlap ? "on" : "off",
                trainer.shards_optimizer() ? ", optimizer state sharded (ZeRO-1)" : "");
  const char* gemm_name = cuda::grouped_gemm_backend_name(trainer.engine().grouped_gemm_backend());
  std::printf("shape        seq %d x batch %d, recipe %s, aux loss %s, fused optimizer %s%s, expert GEMMs %s, "
              "recompute %s, loss %.4f\n",
              seq_len, batch_size, cuda::recipe_name(recipe), options.aux_loss ? "on" : "off",
              gpu.fused_optimizer ? "on" : "off", trainer.steps_experts_in_gemm() ? " (experts stepped in their GEMM)" : "",
              gemm_name, recompute ? "on" : "off", last_loss);
  std::printf("throughput   %.0f tokens/s, step %.3f s, %.1f TFLOP/s, MFU %.1f%% of %.0f TFLOP/s measured bf16 peak\n",
              tokens_per_s, seconds / steps, tflops, 100.0 * tflops / peak_tflops, peak_tflops);
  std::printf("memory       %.1f GiB in use on the device (parameters %.1f, gradients %.1f, optimizer %.1f, activations "
              "%.1f, workspace %.1f GiB)\n",
              used_gib, trainer.parameter_bytes() / 1073741824.0, trainer.gradient_bytes() / 1073741824.0,
              trainer.optimizer_bytes() / 1073741824.0, trainer.engine().activation_bytes() / 1073741824.0,
              trainer.engine().workspace_bytes() / 1073741824.0);
  double phase_total = 0.0;
  for (double ms : phases) phase_total += ms;
  std::printf("breakdown    (ms per step)");
  nlohmann::json breakdown;
  for (int p = 0; p < static_cast<int>(cuda::Phase::Count); ++p) {
    const double per_step = phases[p] / steps;
    std::printf("  %s %.1f", cuda::phase_name(static_cast<cuda::Phase>(p)), per_step);
    breakdown[cuda::phase_name(static_cast<cuda::Phase>(p))] = per_step;
  }
  std::printf("  | total %.1f\n", phase_total / steps);
  if (args.given("json")) {
    const nlohmann::json result = {{"architecture", config.architecture}, {"layers", config.num_layers},
                                   {"seq_len", seq_len}, {"batch_size", batch_size}, {"recipe", cuda::recipe_name(recipe)}, {"fused_optimizer", gpu.fused_optimizer}, {"expert_step_in_gemm", trainer.steps_experts_in_gemm()}, {"grouped_gemm", gemm_name}, {"recompute", recompute},
                                   {"gpus", group.world_size}, {"ep", layout.ep}, {"dp", layout.dp}, {"zero", trainer.shards_optimizer() ? 1 : 0}, {"ep_exchange", args.text("ep-exchange")}, {"ep_overlap", ep_overlap},
                                   {"tokens_per_s", tokens_per_s}, {"step_s", seconds / steps}, {"tflops", tflops},
                                   {"peak_tflops", peak_tflops}, {"mfu", tflops / peak_tflops}, {"memory_gib", used_gib},
                                   {"loss", last_loss}, {"breakdown_ms", breakdown}};
    std::ofstream(args.text("json")) << result.dump(2) << "\n";
  }
  return 0;
#endif
}

}  // namespace moetune::cli
