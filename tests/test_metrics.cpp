// Why: the metrics log and loss curve are what a user reads after a run; these tests pin their format and the edge
// cases (one point, a flat loss, NaN) that would otherwise divide by zero or write a broken chart.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/error.h"
#include "train/metrics.h"

namespace moetune {
namespace {

// A fresh directory for one test, removed when it ends (tests may run in parallel processes).
class ScratchDir {
 public:
  ScratchDir()
      : root_(std::filesystem::temp_directory_path() /
              str("moetune_test_metrics_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_",
                  getpid())) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }
  std::string path(const std::string& name) const { return (root_ / name).string(); }

 private:
  std::filesystem::path root_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The `points` attribute of the polyline with class `name`, or "" if there is none.
std::string polyline_points(const std::string& svg, const std::string& name) {
  size_t at = svg.find("<polyline class=\"" + name + "\"");
  if (at == std::string::npos) return "";
  size_t start = svg.find("points=\"", at) + 8;
  return svg.substr(start, svg.find('"', start) - start);
}

int count_points(const std::string& points) {
  if (points.empty()) return 0;
  int count = 1;
  for (char c : points) count += c == ' ';
  return count;
}

void expect_wellformed_svg(const std::string& svg) {
  EXPECT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 80);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(Metrics, LogWritesOneJsonObjectPerLine) {
  ScratchDir scratch;
  std::string path = scratch.path("metrics.jsonl");
  {
    MetricsLog log(path);
    log.write({{"step", 1}, {"loss", 2.5}});
    log.write({{"step", 2}, {"loss", 2.25}, {"note", "a\nb"}});
    std::string written = read_all(path);  // still open: each record must already be flushed
    EXPECT_EQ(std::count(written.begin(), written.end(), '\n'), 2) << written;
  }
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> records;
  while (std::getline(in, line)) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["step"], 2);
  EXPECT_EQ(records[1]["note"], "a\nb");
}

TEST(Metrics, LogAppendsWhenAsked) {
  ScratchDir scratch;
  std::string path = scratch.path("metrics.jsonl");
  MetricsLog(path).write({{"step", 1}});
  MetricsLog(path, /*append=*/true).write({{"step", 2}});
  EXPECT_EQ(read_all(path), "{\"step\":1}\n{\"step\":2}\n");
  MetricsLog(path).write({{"step", 3}});
  EXPECT_EQ(read_all(path), "{\"step\":3}\n");
}

TEST(Metrics, LogThatCannotOpenNamesPath) {
  ScratchDir scratch;
  std::string path = scratch.path("missing_dir/metrics.jsonl");
  try {
    MetricsLog log(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

TEST(Metrics, LossCurveHasOnePointPerStep) {
  ScratchDir scratch;
  std::string path = scratch.path("loss.svg");
  std::vector<double> steps, losses;
  for (int i = 0; i < 50; ++i) {
    steps.push_back(i * 10);
    losses.push_back(5.0 / (1 + i));
  }
  write_loss_curve_svg(path, steps, losses, "demo <tiny> & MoE");
  std::string svg = read_all(path);
  expect_wellformed_svg(svg);
  EXPECT_EQ(count_points(polyline_points(svg, "train")), 50);
  EXPECT_EQ(polyline_points(svg, "validation"), "");
  EXPECT_NE(svg.find("demo &lt;tiny&gt; &amp; MoE"), std::string::npos);
  EXPECT_NE(svg.find(">step<"), std::string::npos);
  EXPECT_NE(svg.find(">loss<"), std::string::npos);
  EXPECT_NE(svg.find(">400<"), std::string::npos) << "x tick labels on round steps";
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Metrics, LossCurveWithValidationSeries) {
  ScratchDir scratch;
  std::string path = scratch.path("loss.svg");
  write_loss_curve_svg(path, {1, 2, 3, 4}, {4, 3, 2.5, 2}, "t", {2, 4}, {3.5, 2.6});
  std::string svg = read_all(path);
  expect_wellformed_svg(svg);
  EXPECT_EQ(count_points(polyline_points(svg, "train")), 4);
  EXPECT_EQ(count_points(polyline_points(svg, "validation")), 2);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_NE(svg.find(">validation<"), std::string::npos) << "legend";
}

TEST(Metrics, LossCurveHandlesDegenerateInputs) {
  ScratchDir scratch;
  write_loss_curve_svg(scratch.path("one.svg"), {7}, {3.25}, "one point");
  write_loss_curve_svg(scratch.path("flat.svg"), {0, 1, 2}, {2, 2, 2}, "flat");
  write_loss_curve_svg(scratch.path("zero.svg"), {0, 1}, {0, 0}, "zero");
  write_loss_curve_svg(scratch.path("empty.svg"), {}, {}, "empty");
  double nan = std::numeric_limits<double>::quiet_NaN();
  write_loss_curve_svg(scratch.path("nan.svg"), {0, 1, 2}, {2, nan, 1}, "gap");
  EXPECT_EQ(count_points(polyline_points(read_all(scratch.path("one.svg")), "train")), 1);
  EXPECT_NE(read_all(scratch.path("one.svg")).find("<circle"), std::string::npos) << "a lone point is marked";
  EXPECT_EQ(count_points(polyline_points(read_all(scratch.path("flat.svg")), "train")), 3);
  EXPECT_EQ(count_points(polyline_points(read_all(scratch.path("zero.svg")), "train")), 2);
  EXPECT_NE(read_all(scratch.path("zero.svg")).find(">0<"), std::string::npos) << "a zero tick is labelled 0";
  EXPECT_EQ(count_points(polyline_points(read_all(scratch.path("empty.svg")), "train")), 0);
  EXPECT_EQ(count_points(polyline_points(read_all(scratch.path("nan.svg")), "train")), 2);
  for (const char* name : {"one", "flat", "zero", "empty", "nan"}) {
    SCOPED_TRACE(name);
    expect_wellformed_svg(read_all(scratch.path(std::string(name) + ".svg")));
  }
}

TEST(Metrics, LossCurveRejectsMismatchedSeries) {
  ScratchDir scratch;
  std::string path = scratch.path("loss.svg");
  EXPECT_THROW(write_loss_curve_svg(path, {1, 2}, {1}, "t"), Error);
  EXPECT_THROW(write_loss_curve_svg(path, {1}, {1}, "t", {1}, {}), Error);
}

TEST(Metrics, FormatProgress) {
  EXPECT_EQ(format_progress(12, 300, 3.14159265, 12345.4, 42), "step 12/300 | loss 3.1416 | 12,345 tok/s | ETA 0:42");
  EXPECT_EQ(format_progress(1, 10, 10.0, 999, 61.6), "step 1/10 | loss 10.0000 | 999 tok/s | ETA 1:02");
  EXPECT_EQ(format_progress(1, 10, 1.0, 1234567, 3 * 3600 + 5 * 60 + 9),
            "step 1/10 | loss 1.0000 | 1,234,567 tok/s | ETA 3:05:09");
  double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(format_progress(0, 10, nan, nan, -1), "step 0/10 | loss nan | -- tok/s | ETA --");
}

TEST(Metrics, ProgressLinePrintsOneLinePerUpdateWhenNotATerminal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    ProgressLine progress(5, file);
    progress.update(1, 2.0, 100, 4);
    progress.update(2, 1.5, 100, 3);
  }
  std::rewind(file);
  std::string text;
  for (int c; (c = std::fgetc(file)) != EOF;) text += static_cast<char>(c);
  std::fclose(file);
  EXPECT_EQ(text,
            "step 1/5 | loss 2.0000 | 100 tok/s | ETA 0:04\n"
            "step 2/5 | loss 1.5000 | 100 tok/s | ETA 0:03\n");
}

}  // namespace
}  // namespace moetune
