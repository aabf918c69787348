// Why: every NCCL call is checked like every CUDA call (ops/cuda/cuda_check.h): a failure becomes a moetune::Error that
// names the call, the file and the line, with NCCL's own last message (which usually says which peer or transport
// failed), instead of a hang or a silently wrong gradient.
#pragma once

#include <nccl.h>

#include "core/error.h"

namespace moetune::parallel {

inline void check_nccl(ncclResult_t status, const char* call, const char* file, int line) {
  if (status != ncclSuccess)
    fail(file, ":", line, ": ", call, " failed: ", ncclGetErrorString(status), " (", ncclGetLastError(nullptr), ")");
}

}  // namespace moetune::parallel

#define NCCL_CHECK(call) ::moetune::parallel::check_nccl((call), #call, __FILE__, __LINE__)
