// examples/common/job.cpp — Job (job.hpp) with MPI (MLA_WITH_MPI: the build found it) or alone.
#include "common/job.hpp"

#include <algorithm>
#include <cstdlib>
#include <span>
#include <stdexcept>

#ifdef MLA_WITH_MPI
#include <mla/parallel/mpi.hpp>
#endif

namespace examples {

#ifdef MLA_WITH_MPI
struct Job::Mpi {
  Mpi(int& argc, char**& argv) : environment(argc, argv) {}
  mla::mpi::Environment environment;
  mla::mpi::Communicator world;
};
#else
struct Job::Mpi {};
#endif

Job::Job([[maybe_unused]] int& argc, [[maybe_unused]] char**& argv) {
#ifdef MLA_WITH_MPI
  if (mla::mpi::launched_by_mpirun()) {
    mpi_ = std::make_unique<Mpi>(argc, argv);
    rank_ = mpi_->world.rank();
    size_ = mpi_->world.size();
  }
#else
  const char* ranks = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (ranks == nullptr) ranks = std::getenv("PMI_SIZE");
  if (ranks != nullptr && std::atoi(ranks) > 1) {
    throw std::runtime_error("started by mpirun with " + std::string(ranks) +
                             " processes, but this build has no MPI (configure with MPI installed: MLA_ENABLE_MPI)");
  }
#endif
}

Job::~Job() = default;

void Job::agree(const std::optional<Stop>& mine) {
  if (!mpi_) {
    if (mine) throw Stopped(mine->status, mine->message);
    return;
  }
  // "" = carry on; otherwise "<status> <message>". A stop every rank makes alike (a flag of
  // them all) names no rank.
  const auto all = all_gather(mine ? std::to_string(mine->status) + " " + mine->message : std::string());
  const bool alike = std::all_of(all.begin(), all.end(), [&](const std::string& said) { return said == all[0]; });
  for (int r = 0; r < size_; ++r) {
    const std::string& said = all[static_cast<std::size_t>(r)];
    if (said.empty()) continue;
    const std::string message = said.substr(said.find(' ') + 1);
    throw Stopped(std::atoi(said.c_str()), message.empty() || alike ? message : who(r) + message);
  }
}

#ifdef MLA_WITH_MPI
std::vector<std::string> Job::all_gather(const std::string& text) {
  return mpi_ ? mpi_->world.all_gather(text) : std::vector<std::string>{text};
}

void Job::sum_in_rank_order(float* data, std::int64_t n) {
  if (mpi_) mpi_->world.sum_in_rank_order(std::span<float>(data, static_cast<std::size_t>(n)));
}

double Job::sum_in_rank_order(double x) { return mpi_ ? mpi_->world.sum_in_rank_order(x) : x; }

void Job::broadcast(float* data, std::int64_t n) {
  if (mpi_) mpi_->world.broadcast(std::span<float>(data, static_cast<std::size_t>(n)));
}

void Job::broadcast(std::int64_t* data, std::int64_t n) {
  if (mpi_) mpi_->world.broadcast(std::span<std::int64_t>(data, static_cast<std::size_t>(n)));
}

void Job::abort(int status) {
  if (mpi_) mpi_->world.abort(status);
  std::exit(status);
}
#else
std::vector<std::string> Job::all_gather(const std::string& text) { return {text}; }
void Job::sum_in_rank_order(float*, std::int64_t) {}
double Job::sum_in_rank_order(double x) { return x; }
void Job::broadcast(float*, std::int64_t) {}
void Job::broadcast(std::int64_t*, std::int64_t) {}
void Job::abort(int status) { std::exit(status); }
#endif

}  // namespace examples
