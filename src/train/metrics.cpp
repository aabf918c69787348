// Why: the run's record (metrics.jsonl), its picture (loss curve SVG) and its live progress line, written with the
// standard library only. The SVG is plain text assembled here; ticks fall on 1/2/5 x 10^k so the axes read cleanly.
#include "train/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moetune {

MetricsLog::MetricsLog(const std::string& path, bool append)
    : path_(path), out_(path, append ? std::ios::app : std::ios::trunc) {
  if (!out_) fail(path, ": cannot open metrics log for writing (", std::strerror(errno), ")");
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  out_.flush();
  if (!out_) fail(path_, ": cannot write metrics record (", std::strerror(errno), ")");
}

namespace {

// Chart geometry in SVG user units: the plot area is [kLeft, kRight] x [kTop, kBottom].
constexpr double kWidth = 720, kHeight = 420;
constexpr double kLeft = 72, kRight = kWidth - 24, kTop = 48, kBottom = kHeight - 56;
constexpr double kTargetTicks = 5;

// An axis: the data range widened to whole ticks.
struct Axis {
  double lo, hi, tick;
};

// 1, 2 or 5 x 10^k, the nearest "nice" step at or around `raw`.
double nice_step(double raw) {
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double fraction = raw / power;
  double nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  return nice * power;
}

Axis make_axis(double lo, double hi, double flat_pad) {
  if (!(lo <= hi)) {  // no finite points
    lo = 0;
    hi = 1;
  }
  if (hi - lo <= 0) {
    double pad = std::max(std::abs(lo) * 0.05, flat_pad);
    lo -= pad;
    hi += pad;
  }
  double tick = nice_step((hi - lo) / kTargetTicks);
  return {std::floor(lo / tick + 1e-9) * tick, std::ceil(hi / tick - 1e-9) * tick, tick};
}

std::string number(double value, const char* format) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    const char* entity = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&quot;" : nullptr;
    if (entity) {
      out += entity;
    } else {
      out += c;
    }
  }
  return out;
}

struct Series {
  const std::vector<double>& steps;
  const std::vector<double>& losses;
  const char* color;
  const char* dash;  // SVG stroke-dasharray, "" for solid
  const char* name;
};

bool finite_point(const Series& series, size_t i) {
  return std::isfinite(series.steps[i]) && std::isfinite(series.losses[i]);
}

}  // namespace

void write_loss_curve_svg(const std::string& path, const std::vector<double>& steps, const std::vector<double>& losses,
                          const std::string& title, const std::vector<double>& val_steps,
                          const std::vector<double>& val_losses) {
  if (steps.size() != losses.size())
    fail(path, ": loss curve has ", steps.size(), " steps but ", losses.size(), " losses");
  if (val_steps.size() != val_losses.size())
    fail(path, ": loss curve has ", val_steps.size(), " validation steps but ", val_losses.size(),
         " validation losses");
  std::vector<Series> series = {{steps, losses, "#1f77b4", "", "train"}};
  if (!val_steps.empty()) series.push_back({val_steps, val_losses, "#d62728", "6 4", "validation"});

  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : series) {
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (!finite_point(s, i)) continue;
      x_lo = std::min(x_lo, s.steps[i]);
      x_hi = std::max(x_hi, s.steps[i]);
      y_lo = std::min(y_lo, s.losses[i]);
      y_hi = std::max(y_hi, s.losses[i]);
    }
  }
  Axis x = make_axis(x_lo, x_hi, 1.0);
  Axis y = make_axis(y_lo, y_hi, 0.05);
  auto px = [&](double v) { return kLeft + (v - x.lo) / (x.hi - x.lo) * (kRight - kLeft); };
  auto py = [&](double v) { return kBottom - (v - y.lo) / (y.hi - y.lo) * (kBottom - kTop); };

  std::string svg = str("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", kWidth, "\" height=\"", kHeight,
                        "\" viewBox=\"0 0 ", kWidth, " ", kHeight, "\" font-family=\"sans-serif\" font-size=\"12\">\n",
                        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", "<text x=\"", kWidth / 2,
                        "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", xml_escape(title), "</text>\n");
  // Grid lines and tick labels.
  for (int i = 0; i <= static_cast<int>(std::lround((x.hi - x.lo) / x.tick)); ++i) {
    double value = x.lo + i * x.tick, at = px(value);
    svg += str("<line x1=\"", number(at, "%.1f"), "\" y1=\"", kTop, "\" x2=\"", number(at, "%.1f"), "\" y2=\"", kBottom,
               "\" stroke=\"#e0e0e0\"/>\n<text x=\"", number(at, "%.1f"), "\" y=\"", kBottom + 18,
               "\" text-anchor=\"middle\">", number(value, "%g"), "</text>\n");
  }
  for (int i = 0; i <= static_cast<int>(std::lround((y.hi - y.lo) / y.tick)); ++i) {
    double value = y.lo + i * y.tick, at = py(value);
    svg += str("<line x1=\"", kLeft, "\" y1=\"", number(at, "%.1f"), "\" x2=\"", kRight, "\" y2=\"", number(at, "%.1f"),
               "\" stroke=\"#e0e0e0\"/>\n<text x=\"", kLeft - 8, "\" y=\"", number(at + 4, "%.1f"),
               "\" text-anchor=\"end\">", number(value, "%g"), "</text>\n");
  }
  // Axes and their names.
  svg += str("<path d=\"M", kLeft, " ", kTop, " V", kBottom, " H", kRight, "\" fill=\"none\" stroke=\"black\"/>\n",
             "<text x=\"", (kLeft + kRight) / 2, "\" y=\"", kHeight - 14, "\" text-anchor=\"middle\">step</text>\n",
             "<text x=\"18\" y=\"", (kTop + kBottom) / 2, "\" text-anchor=\"middle\" transform=\"rotate(-90 18 ",
             (kTop + kBottom) / 2, ")\">loss</text>\n");
  // The data, then a legend when there is more than one series.
  for (const Series& s : series) {
    std::string points;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (!finite_point(s, i)) continue;
      if (!points.empty()) points += ' ';
      points += number(px(s.steps[i]), "%.1f") + "," + number(py(s.losses[i]), "%.1f");
    }
    if (points.empty()) continue;
    if (points.find(' ') == std::string::npos) {  // a lone point draws no line: mark it
      size_t comma = points.find(',');
      svg += str("<circle cx=\"", points.substr(0, comma), "\" cy=\"", points.substr(comma + 1), "\" r=\"3\" fill=\"",
                 s.color, "\"/>\n");
    }
    svg += str("<polyline class=\"", s.name, "\" points=\"", points, "\" fill=\"none\" stroke=\"", s.color,
               "\" stroke-width=\"1.5\"", *s.dash ? str(" stroke-dasharray=\"", s.dash, "\"") : "", "/>\n");
  }
  if (series.size() > 1) {
    for (size_t k = 0; k < series.size(); ++k) {
      double at = kTop + 14 + 18 * static_cast<double>(k);
      const Series& s = series[k];
      svg += str("<line x1=\"", kRight - 110, "\" y1=\"", at - 4, "\" x2=\"", kRight - 86, "\" y2=\"", at - 4,
                 "\" stroke=\"", s.color, "\" stroke-width=\"1.5\"",
                 *s.dash ? str(" stroke-dasharray=\"", s.dash, "\"") : "", "/>\n<text x=\"", kRight - 80, "\" y=\"", at,
                 "\">", s.name, "</text>\n");
    }
  }
  svg += "</svg>\n";

  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) fail(tmp, ": cannot open for writing (", std::strerror(errno), ")");
    out << svg;
    out.close();
    if (!out) fail(tmp, ": write error (", std::strerror(errno), ")");
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) fail(path, ": cannot move ", tmp, " into place (", error.message(), ")");
}

std::string format_progress(int step, int total, double loss, double tokens_per_s, double eta_seconds) {
  std::string rate = "--";
  if (std::isfinite(tokens_per_s) && tokens_per_s >= 0) {
    std::string digits = std::to_string(std::llround(tokens_per_s));
    rate.clear();
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % 3 == 0) rate += ',';
      rate += digits[i];
    }
  }
  std::string eta = "--";
  if (std::isfinite(eta_seconds) && eta_seconds >= 0) {
    long long seconds = std::llround(eta_seconds);
    long long hours = seconds / 3600, minutes = seconds / 60 % 60;
    char text[48];
    if (hours > 0)
      std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", hours, minutes, seconds % 60);
    else
      std::snprintf(text, sizeof text, "%lld:%02lld", minutes, seconds % 60);
    eta = text;
  }
  std::string loss_text = std::isnan(loss) ? "nan" : number(loss, "%.4f");
  return str("step ", step, "/", total, " | loss ", loss_text, " | ", rate, " tok/s | ETA ", eta);
}

ProgressLine::ProgressLine(int total_steps, std::FILE* out)
    : total_steps_(total_steps), out_(out), in_place_(isatty(fileno(out)) == 1) {}

void ProgressLine::update(int step, double loss, double tokens_per_s, double eta_seconds) {
  std::string line = format_progress(step, total_steps_, loss, tokens_per_s, eta_seconds);
  if (in_place_) {
    std::fprintf(out_, "\r%s\033[K", line.c_str());  // \033[K clears what a longer previous line left
    line_open_ = true;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::finish() {
  if (!line_open_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
  line_open_ = false;
}

}  // namespace moetune
