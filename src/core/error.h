// Why: every failure a user can cause (bad config, bad checkpoint, bad data, bad flag) must end as one line that names the
// file and the item, never as a crash. All such failures are thrown as moetune::Error and caught once, in the CLI.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moetune {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Joins any streamable values into one string: str("tensor ", name, " has ", n, " dims").
template <class... Parts>
std::string str(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(str(std::forward<Parts>(parts)...));
}

}  // namespace moetune

// Internal invariant (a bug in moetune, not bad input): reports file:line.
#define MT_ASSERT(cond)                                                                                 \
  do {                                                                                                  \
    if (!(cond)) ::moetune::fail("internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " failed"); \
  } while (0)
