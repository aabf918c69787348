// Why: a training run must leave a record a person can read without moetune: one JSON object per line (metrics.jsonl,
// greppable, loadable by pandas) and a loss curve as a self-contained SVG (opens in any browser, no plotting library).
// While it runs, one progress line says where it is. Formatting is kept in pure functions so tests can pin it down.
#pragma once

#include <cstdio>
#include <fstream>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace moetune {

// A JSONL file of records (one JSON object per line), flushed after each line so a crash loses nothing written.
class MetricsLog {
 public:
  // Truncates `path` (or appends to it, when resuming a run); throws moetune::Error naming the path if it cannot.
  explicit MetricsLog(const std::string& path, bool append = false);
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Writes a line chart of loss against step (axes with tick labels, title) to `path`, atomically (tmp file + rename).
// `steps` and `losses` have the same length; optional `val_steps`/`val_losses` (same length as each other) are drawn as
// a second, dashed series with a legend. Non-finite points are skipped; one point or a constant loss is fine; no points
// at all gives empty axes.
void write_loss_curve_svg(const std::string& path, const std::vector<double>& steps, const std::vector<double>& losses,
                          const std::string& title, const std::vector<double>& val_steps = {},
                          const std::vector<double>& val_losses = {});

// "step 12/300 | loss 3.1416 | 12,345 tok/s | ETA 0:42" (ETA as h:mm:ss past an hour; "--" for an unknown rate/ETA,
// i.e. negative or non-finite).
std::string format_progress(int step, int total, double loss, double tokens_per_s, double eta_seconds);

// Prints format_progress lines to `out`: rewritten in place ('\r') when `out` is a terminal, one line per update
// otherwise (logs, pipes).
class ProgressLine {
 public:
  explicit ProgressLine(int total_steps, std::FILE* out = stderr);
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  void update(int step, double loss, double tokens_per_s, double eta_seconds);
  // Ends an in-place line with a newline, so later output starts on its own line.
  void finish();

 private:
  int total_steps_;
  std::FILE* out_;
  bool in_place_;
  bool line_open_ = false;
};

}  // namespace moetune
