// examples/common/job.hpp — the processes of one train_model run: this process alone, or the
// ranks of an MPI job (`mpirun -np N train_model ...`, with a build that found MPI).
//
// Every rank checks its own inputs; agree() then stops every rank together when any of them
// failed, naming the first such rank, so that a job never hangs in a collective one rank
// left. Failures the other ranks cannot see later on (a write error on rank 0, a crash) end
// the whole job through abort(). The collectives behind it are mla/parallel/mpi.hpp's; this
// header itself needs no MPI, so the CUDA units that include train_run.hpp compile without it.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace examples {

/// Why a rank stops before training: an exit status and the line to print ("" prints nothing).
struct Stop {
  int status = 1;
  std::string message;
};

/// Thrown on every rank when the job stops together; the leader prints line().
class Stopped : public std::exception {
 public:
  Stopped(int status, std::string line) : status_(status), line_(std::move(line)) {}
  [[nodiscard]] int status() const { return status_; }
  [[nodiscard]] const std::string& line() const { return line_; }
  [[nodiscard]] const char* what() const noexcept override { return line_.c_str(); }

 private:
  int status_;
  std::string line_;
};

class Job {
 public:
  /// Joins the MPI job when this process was launched by mpirun; alone otherwise. Refuses a
  /// launch by mpirun with several processes in a build without MPI.
  Job(int& argc, char**& argv);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  /// Rank 0: the one that prints, evaluates and writes.
  [[nodiscard]] bool leader() const { return rank_ == 0; }
  /// "rank 2: " in a job of several processes, "" alone.
  [[nodiscard]] std::string who(int rank) const { return size_ > 1 ? "rank " + std::to_string(rank) + ": " : ""; }

  /// Collective: throws Stopped on every rank if any rank passes a Stop (the lowest such rank's,
  /// its message prefixed by who()); returns on every rank otherwise.
  void agree(const std::optional<Stop>& mine);

  /// Runs `f`; an exception from it becomes this rank's Stop. Then agree().
  template <class F>
  void agree_on(F&& f) {
    std::optional<Stop> stop;
    try {
      std::forward<F>(f)();
    } catch (const Stopped& e) {
      stop = Stop{e.status(), e.line()};
    } catch (const std::exception& e) {
      stop = Stop{1, e.what()};
    }
    agree(stop);
  }

  /// Collective: every rank's text, by rank.
  [[nodiscard]] std::vector<std::string> all_gather(const std::string& text);
  /// Collective: data = the sum over ranks, in rank order (bit-identical on every rank).
  void sum_in_rank_order(float* data, std::int64_t n);
  [[nodiscard]] double sum_in_rank_order(double x);
  /// Collective: rank 0's data on every rank.
  void broadcast(float* data, std::int64_t n);
  void broadcast(std::int64_t* data, std::int64_t n);
  /// Ends every rank now (MPI_Abort with several processes; exit alone).
  [[noreturn]] void abort(int status);

 private:
  struct Mpi;  // job.cpp: MPI's environment and communicator, when built with MPI
  std::unique_ptr<Mpi> mpi_;
  int rank_ = 0, size_ = 1;
};

}  // namespace examples
