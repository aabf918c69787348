// Why: every CUDA, cuBLAS and cuDNN call is checked; a failure becomes a moetune::Error that names the call, the file
// and the line, so a GPU problem reads like any other error instead of corrupting the run silently.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace moetune::cuda {

using bf16 = __nv_bfloat16;

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) fail(file, ":", line, ": ", call, " failed: ", cudaGetErrorString(status));
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(file, ":", line, ": ", call, " failed: ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ")");
}

// Launch-configuration errors of the last kernel launch (asynchronous faults surface at the next synchronising call).
inline void check_launch(const char* kernel, const char* file, int line) {
  check_cuda(cudaGetLastError(), kernel, file, line);
}

}  // namespace moetune::cuda

#define CUDA_CHECK(call) ::moetune::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::moetune::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH(kernel) ::moetune::cuda::check_launch(kernel, __FILE__, __LINE__)
