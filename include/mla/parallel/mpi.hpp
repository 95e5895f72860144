// mla/parallel/mpi.hpp — data-parallel training over MPI (Open MPI): the deterministic
// all-reduce of the flat gradient buffer, and the few other collectives a trainer needs.
//
// Not part of mla/mla.hpp: it includes <mpi.h>, and a project that wants it links mla::mpi
// (CMake: built when MPI is found, MLA_ENABLE_MPI).
//
// MPI_Allreduce does not promise an order of summation, so its result may change with the
// algorithm Open MPI picks for a message size or a process count. sum_in_rank_order fixes it:
// with N ranks the buffer is cut into N chunks, rank j gathers chunk j of every rank
// (MPI_Alltoallv) and sums them as ((x_0 + x_1) + x_2) + ... , then every rank gathers every
// summed chunk (MPI_Allgatherv). Each rank sends and receives 2 (N-1)/N of the buffer, as a
// ring all-reduce does, and the result is the same bits on every rank, for any N and any
// message size: the order in which mla::GradientSum (mla/train/grad_sum.hpp) adds micro-batches.
//
// The CPU backend's buffers are host memory and go to MPI as they are. (A GPU backend would
// reduce in device memory with NCCL, whose sum order is not fixed either.)
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mla/core/error.hpp"

namespace mla::mpi {

/// An MPI call that failed: names the call and MPI's own description of the error.
class MpiError : public Error {
 public:
  using Error::Error;
};

namespace detail {

inline void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw MpiError(std::string(call) + ": " + std::string(text, static_cast<std::size_t>(length)));
}

inline int count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw MpiError(std::string(what) + ": " + std::to_string(n) + " elements in one message (MPI counts are int)");
  }
  return static_cast<int>(n);
}

template <class T>
MPI_Datatype datatype() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  else static_assert(sizeof(T) == 0, "mla::mpi: no MPI datatype for this element type");
}

}  // namespace detail

/// Whether this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH's
/// Hydra, or a PMIx launcher such as srun): then MPI_Init joins it to the job's other ranks.
inline bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

/// MPI for the life of the object: MPI_Init_thread (funneled: only the thread that made it
/// calls MPI; OpenMP's workers never do) and MPI_Finalize. Errors come back as MpiError.
class Environment {
 public:
  Environment(int& argc, char**& argv) {
    int provided = 0;
    detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~Environment() { MPI_Finalize(); }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
};

/// The ranks of a communicator (MPI_COMM_WORLD by default) and the collectives on them. Every
/// rank must make the same calls in the same order, as with any MPI collective.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }

  /// data = the sum over ranks of every rank's data, in rank order (see the file comment),
  /// identical on every rank. Every rank passes the same length. Its scratch memory (one
  /// chunk per rank) is kept for the next call: a training step allocates nothing.
  void sum_in_rank_order(std::span<float> data) {
    if (size_ == 1) return;
    const std::size_t n = data.size(), ranks = static_cast<std::size_t>(size_);
    counts_.resize(ranks);
    offsets_.resize(ranks);
    for (std::size_t j = 0; j < ranks; ++j) {  // chunk j = [n j / N, n (j + 1) / N)
      const std::size_t begin = n * j / ranks, end = n * (j + 1) / ranks;
      counts_[j] = detail::count(end - begin, "sum_in_rank_order");
      offsets_[j] = detail::count(begin, "sum_in_rank_order");
    }
    const auto mine = static_cast<std::size_t>(counts_[static_cast<std::size_t>(rank_)]);
    received_.resize(ranks * mine);
    receive_counts_.assign(ranks, static_cast<int>(mine));
    receive_offsets_.resize(ranks);
    for (std::size_t i = 0; i < ranks; ++i) receive_offsets_[i] = detail::count(i * mine, "sum_in_rank_order");
    detail::check(MPI_Alltoallv(data.data(), counts_.data(), offsets_.data(), MPI_FLOAT, received_.data(),
                                receive_counts_.data(), receive_offsets_.data(), MPI_FLOAT, comm_),
                  "MPI_Alltoallv");
    float* sum = data.data() + offsets_[static_cast<std::size_t>(rank_)];
    std::copy_n(received_.data(), mine, sum);
    for (std::size_t i = 1; i < ranks; ++i) {  // ranks in order; each element's sum is its own
      const float* x = received_.data() + i * mine;
      for (std::size_t k = 0; k < mine; ++k) sum[k] += x[k];
    }
    detail::check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data(), counts_.data(), offsets_.data(),
                                 MPI_FLOAT, comm_),
                  "MPI_Allgatherv");
  }

  /// The sum over ranks of `x`, in rank order: the same value on every rank.
  [[nodiscard]] double sum_in_rank_order(double x) {
    std::vector<double> all(static_cast<std::size_t>(size_));
    detail::check(MPI_Allgather(&x, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, comm_), "MPI_Allgather");
    double sum = 0;
    for (double v : all) sum += v;
    return sum;
  }

  /// Rank `root`'s data, on every rank (every rank passes the same length).
  template <class T>
  void broadcast(std::span<T> data, int root = 0) {
    for (std::size_t first = 0; first < data.size(); first += INT_MAX) {  // MPI counts are int
      const std::size_t n = std::min<std::size_t>(INT_MAX, data.size() - first);
      detail::check(MPI_Bcast(data.data() + first, static_cast<int>(n), detail::datatype<T>(), root, comm_),
                    "MPI_Bcast");
    }
  }

  /// Every rank's string, indexed by rank.
  [[nodiscard]] std::vector<std::string> all_gather(std::string_view text) {
    int length = detail::count(text.size(), "all_gather");
    std::vector<int> lengths(static_cast<std::size_t>(size_)), offsets(lengths.size());
    detail::check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm_), "MPI_Allgather");
    std::size_t total = 0;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
      offsets[i] = detail::count(total, "all_gather");
      total += static_cast<std::size_t>(lengths[i]);
    }
    std::string all(total, '\0');
    detail::check(MPI_Allgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                                 comm_),
                  "MPI_Allgatherv");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
      out.push_back(all.substr(static_cast<std::size_t>(offsets[i]), static_cast<std::size_t>(lengths[i])));
    }
    return out;
  }

  void barrier() { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }

  /// Ends every rank of the job at once (MPI_Abort): for a failure the other ranks cannot see.
  [[noreturn]] void abort(int status) {
    MPI_Abort(comm_, status);
    std::_Exit(status);  // MPI_Abort does not return; this says so to the compiler
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<int> counts_, offsets_, receive_counts_, receive_offsets_;
  std::vector<float> received_;
};

}  // namespace mla::mpi
