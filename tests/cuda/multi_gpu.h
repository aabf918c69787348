// Why: the NCCL tests need several ranks, and a test binary cannot launch itself N times cheaply; so each rank is a
// thread driving its own GPU (NCCL allows one communicator rank per device, any number per process). Ranks return
// their downloaded results and the main thread compares them with the oracle, so gtest assertions never run on the
// rank threads. A rank that throws aborts its communicator and the first error is rethrown on the main thread; peers
// already waiting in a collective with it may still wait, so a test whose failure can be one-sided catches the error on
// every rank and returns it (as OverflowFailsOnEveryRank does).
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "parallel/nccl_comm.h"

namespace moetune::testing {

inline int gpu_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

#define SKIP_WITHOUT_GPUS(n)                                                                                         \
  if (::moetune::testing::gpu_count() < (n))                                                                        \
  GTEST_SKIP() << "needs " << (n) << " CUDA devices (one NCCL rank per GPU), found " << ::moetune::testing::gpu_count()

// Runs body(comm) on `ranks` threads, thread r on device r with rank r of a communicator of all of them; `body`
// returns the rank's Result. Returns the results by rank after every thread has finished; rethrows the first error.
template <class Result, class Body>
std::vector<Result> run_ranks(int ranks, Body body) {
  const ncclUniqueId id = parallel::NcclComm::unique_id();
  std::vector<Result> results(ranks);
  std::exception_ptr error;
  std::mutex error_mutex;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      parallel::NcclComm comm;
      try {
        CUDA_CHECK(cudaSetDevice(r));
        comm = parallel::NcclComm::join(id, ranks, r);
        results[r] = body(comm);
      } catch (...) {
        comm.abort();
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  return results;
}

}  // namespace moetune::testing
