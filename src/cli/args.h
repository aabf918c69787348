// Why: a small declared-options parser, so each command's --help is generated from the same table that parses its flags
// (the help text cannot drift from what the parser accepts). Flags take "--name value" or "--name=value".
#pragma once

#include <map>
#include <string>
#include <vector>

namespace moetune::cli {

struct Option {
  std::string name;          // without the leading dashes
  std::string value_name;    // e.g. "N"; empty for a boolean switch
  std::string default_text;  // shown in --help; the parsed default when the flag is absent
  std::string help;
};

class Args {
 public:
  Args(std::string command, std::string summary, std::vector<Option> options);

  // Parses argv (after the command name). Returns false when --help was asked (help printed to stdout).
  // Throws UsageError on an unknown flag, a missing value or a stray argument.
  bool parse(int argc, char** argv);

  bool given(const std::string& name) const;
  std::string text(const std::string& name) const;
  long integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;

  std::string help() const;

 private:
  const Option& option(const std::string& name) const;

  std::string command_, summary_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
};

// Bad command-line use (exit status 2), as opposed to bad input data (exit status 1).
struct UsageError {
  std::string message;
};

}  // namespace moetune::cli
