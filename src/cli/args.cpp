// Why: see args.h.
#include "cli/args.h"

#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace moetune::cli {

Args::Args(std::string command, std::string summary, std::vector<Option> options)
    : command_(std::move(command)), summary_(std::move(summary)), options_(std::move(options)) {}

const Option& Args::option(const std::string& name) const {
  for (const Option& candidate : options_)
    if (candidate.name == name) return candidate;
  MT_ASSERT(false);
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--help" || word == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (word.rfind("--", 0) != 0) throw UsageError{str("moetune ", command_, ": unexpected argument \"", word, "\"")};
    word = word.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = word.find('='); eq != std::string::npos) {
      value = word.substr(eq + 1);
      word = word.substr(0, eq);
      has_value = true;
    }
    const Option* found = nullptr;
    for (const Option& candidate : options_)
      if (candidate.name == word) found = &candidate;
    if (!found) throw UsageError{str("moetune ", command_, ": unknown option --", word, " (see moetune ", command_, " --help)")};
    if (found->value_name.empty()) {
      if (has_value) throw UsageError{str("moetune ", command_, ": option --", word, " takes no value")};
      values_[word] = "1";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) throw UsageError{str("moetune ", command_, ": option --", word, " needs a value (", found->value_name, ")")};
      value = argv[++i];
    }
    values_[word] = value;
  }
  return true;
}

bool Args::given(const std::string& name) const {
  option(name);
  return values_.count(name) > 0;
}

std::string Args::text(const std::string& name) const {
  const auto it = values_.find(name);
  return it != values_.end() ? it->second : option(name).default_text;
}

long Args::integer(const std::string& name) const {
  const std::string value = text(name);
  char* end = nullptr;
  const long parsed = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0') throw UsageError{str("moetune ", command_, ": --", name, " expects an integer, got \"", value, "\"")};
  return parsed;
}

double Args::number(const std::string& name) const {
  const std::string value = text(name);
  char* end = nullptr;
  const double parsed = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0') throw UsageError{str("moetune ", command_, ": --", name, " expects a number, got \"", value, "\"")};
  return parsed;
}

bool Args::flag(const std::string& name) const { return values_.count(name) > 0 && option(name).value_name.empty(); }

std::string Args::help() const {
  std::string out = str("usage: moetune ", command_, " [options]\n\n", summary_, "\n\noptions:\n");
  for (const Option& o : options_) {
    std::string left = "  --" + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
    if (left.size() < 28) left.resize(28, ' ');
    else left += "\n" + std::string(28, ' ');
    out += left + o.help;
    if (!o.default_text.empty()) out += " (default: " + o.default_text + ")";
    out += "\n";
  }
  out += str("  --help                    show this help\n");
  return out;
}

}  // namespace moetune::cli
