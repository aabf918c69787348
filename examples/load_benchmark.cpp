// Why: how fast a Hugging Face checkpoint goes from disk into moetune, measured the way tools/hf_check/load_speed.py
// compares it with the disk and with Transformers: the streaming loader (io/streaming_loader.h) on a model folder, into
// the fp32 host arena (the CPU engine's destination), into the GPU ("gpu": bf16 through pinned staging buffers, what
// `moetune train --device cuda` does; timed until the last copy has landed), or into a per-worker scratch buffer
// ("discard": read + convert only). Prints progress on stderr and one JSON line on stdout.
//
//   load_benchmark MODEL_DIR [--threads N] [--sink arena|gpu|discard] [--repeat K] [--ep-ranks W]
//     --threads   worker threads (default min(8, hardware threads))
//     --repeat    loads K times; reports each and the best (the first may come from disk, later ones from the page cache)
//     --ep-ranks  load as rank 0 of W expert-parallel ranks (experts e with e % W == 0)
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/hf_checkpoint.h"
#include "io/streaming_loader.h"
#include "model/config.h"
#include "model/weights.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_loader.h"
#include "ops/cuda/device_buffer.h"
#endif

namespace {

using namespace moetune;

// Converts every piece into a scratch buffer of its worker and keeps nothing.
class DiscardSink final : public TensorSink {
 public:
  void begin(int workers) override { scratch_.assign(static_cast<size_t>(workers), {}); }
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override {
    std::vector<float>& buffer = scratch_[static_cast<size_t>(worker)];
    if (buffer.size() < dest.numel) buffer.resize(dest.numel);
    HfTensor at_zero = dest;
    at_zero.offset = 0;
    HostF32Sink(buffer.data()).write(at_zero, src, worker);
  }

 private:
  std::vector<std::vector<float>> scratch_;
};

double peak_rss_gb() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0 / 1e9;  // ru_maxrss is in kB on Linux
}

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr, "load_benchmark: %s\nusage: load_benchmark MODEL_DIR [--threads N] [--sink arena|gpu|discard] "
               "[--repeat K] [--ep-ranks W]\n", message);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') usage("a model folder is required");
  const std::string folder = argv[1];
  int threads = 0, repeat = 1, ep_ranks = 1;
  std::string sink_name = "arena";
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
    const std::string value = argv[++i];
    if (flag == "--threads") threads = std::atoi(value.c_str());
    else if (flag == "--repeat") repeat = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--ep-ranks") ep_ranks = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--sink") sink_name = value;
    else usage(("unknown option " + flag).c_str());
  }
  if (sink_name != "arena" && sink_name != "discard" && sink_name != "gpu") usage("--sink is arena, gpu or discard");
#ifndef MOETUNE_HAVE_CUDA
  if (sink_name == "gpu") usage("--sink gpu needs a moetune built with CUDA");
#endif

  try {
    const ModelConfig config = load_config(folder);
    const ParamLayout layout(config);
    std::vector<float> arena;
    if (sink_name == "arena") arena.assign(layout.total_floats(), 0.0f);  // allocated and touched before timing
#ifdef MOETUNE_HAVE_CUDA
    cuda::DeviceBuffer<cuda::bf16> device_params;
    if (sink_name == "gpu") device_params = cuda::DeviceBuffer<cuda::bf16>(layout.total_floats());
#endif
    LoadOptions options;
    options.threads = threads;
    if (ep_ranks > 1) options.owns_expert = [ep_ranks](int, int expert) { return expert % ep_ranks == 0; };

    nlohmann::json runs = nlohmann::json::array();
    LoadReport best;
    for (int r = 0; r < repeat; ++r) {
      std::unique_ptr<TensorSink> sink;
      if (sink_name == "arena") sink = std::make_unique<HostF32Sink>(arena.data());
#ifdef MOETUNE_HAVE_CUDA
      else if (sink_name == "gpu") sink = std::make_unique<cuda::GpuBf16Sink>(device_params.data());
#endif
      else sink = std::make_unique<DiscardSink>();
      const LoadReport report = stream_hf_weights(folder, config, layout, *sink, options);  // the GPU sink's end() waits
      std::fprintf(stderr, "load %d/%d: %s\n", r + 1, repeat, format_load_summary(report.bytes_read, report.seconds).c_str());
      runs.push_back({{"seconds", report.seconds}, {"gb_per_s", report.gb_per_s()}});
      if (r == 0 || report.seconds < best.seconds) best = report;
    }
    const nlohmann::json result = {
        {"system", "moetune"}, {"folder", folder}, {"sink", sink_name}, {"threads", best.threads},
        {"shards", best.shards}, {"tensors", best.tensors_read}, {"ep_ranks", ep_ranks},
        {"expert_layout", best.expert_layout == ExpertLayout::Fused ? "fused" : "per-expert"},
        {"bytes_total", best.bytes_total}, {"bytes_read", best.bytes_read}, {"seconds", best.seconds},
        {"gb_per_s", best.gb_per_s()}, {"runs", runs}, {"arena_gb", static_cast<double>(arena.size()) * 4 / 1e9},
        {"peak_rss_gb", peak_rss_gb()}};
    std::printf("%s\n", result.dump().c_str());
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "load_benchmark: %s\n", error.what());
    return 1;
  }
}
