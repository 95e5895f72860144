// tests/mpi/test_collectives.cpp — mla/parallel/mpi.hpp under mpirun (ctest runs it with 3
// ranks; any number works): the rank-order sum is exactly ((x_0 + x_1) + x_2) + ... on every
// rank, for lengths that do and do not divide into chunks; the other collectives deliver what
// they say; a repeated all-reduce allocates nothing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <mla/parallel/mpi.hpp>

// Counts this program's operator new calls (MPI's own allocations are malloc's, not counted).
namespace {
std::atomic<long> g_news{0};
}
void* operator new(std::size_t n) {
  ++g_news;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// g++ takes free() on what a (replaced) operator new returned for a mismatch: here it is the pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

/// Rank r's element i: magnitudes from 1e-4 to 1e4 and both signs, so that the order of a
/// float sum changes its result.
float value(int rank, std::size_t i) {
  const std::uint64_t h = (static_cast<std::uint64_t>(rank) * 0x9E3779B97F4A7C15ull) ^ (i * 0xBF58476D1CE4E5B9ull);
  const double unit = static_cast<double>((h >> 11) % 1000003) / 1000003.0;  // [0, 1)
  const double sign = (h >> 7) & 1 ? 1.0 : -1.0;
  return static_cast<float>(sign * std::pow(10.0, -4.0 + 8.0 * unit));
}

std::vector<float> data_of(int rank, std::size_t n) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = value(rank, i);
  return x;
}

}  // namespace

TEST_CASE("sum_in_rank_order: ((x_0 + x_1) + x_2) + ..., the same bits on every rank, any length") {
  mla::mpi::Communicator world;
  const int ranks = world.size();
  const auto sizes = {std::size_t{0}, std::size_t{1}, static_cast<std::size_t>(ranks - 1),
                      static_cast<std::size_t>(ranks), std::size_t{1000}, std::size_t{100003}};
  for (std::size_t n : sizes) {
    CAPTURE(n);
    auto x = data_of(world.rank(), n);
    world.sum_in_rank_order(std::span<float>(x));
    std::vector<float> expected = data_of(0, n), reversed = data_of(ranks - 1, n);
    for (int r = 1; r < ranks; ++r) {
      const auto y = data_of(r, n), z = data_of(ranks - 1 - r, n);
      for (std::size_t i = 0; i < n; ++i) {
        expected[i] += y[i];
        reversed[i] += z[i];
      }
    }
    CHECK(std::memcmp(x.data(), expected.data(), n * sizeof(float)) == 0);
    // The data is such that the order matters: the check above would see another order.
    if (n == 100003 && ranks >= 3) CHECK(std::memcmp(expected.data(), reversed.data(), n * sizeof(float)) != 0);
  }
}

TEST_CASE("sum_in_rank_order: a repeated call of the same length allocates nothing") {
  mla::mpi::Communicator world;
  auto x = data_of(world.rank(), 5000);
  world.sum_in_rank_order(std::span<float>(x));
  const long before = g_news.load();
  for (int i = 0; i < 3; ++i) world.sum_in_rank_order(std::span<float>(x));
  CHECK(g_news.load() == before);
}

TEST_CASE("sum_in_rank_order of a double, broadcast, all_gather") {
  mla::mpi::Communicator world;
  const int ranks = world.size(), rank = world.rank();
  double expected = 0;
  for (int r = 0; r < ranks; ++r) expected += 0.1 * (r + 1);
  CHECK(world.sum_in_rank_order(0.1 * (rank + 1)) == expected);

  std::vector<float> f(777, static_cast<float>(rank));
  std::vector<std::int64_t> k(3, -rank);
  f[5] = rank == 0 ? 2.5f : -1.0f;
  world.broadcast(std::span<float>(f));
  world.broadcast(std::span<std::int64_t>(k));
  CHECK(f[0] == 0.0f);
  CHECK(f[5] == 2.5f);
  CHECK(k[2] == 0);

  // Different lengths, the empty string among them.
  const std::string mine = rank == 1 ? std::string() : std::string(static_cast<std::size_t>(rank) * 3 + 1, 'a' + rank % 26);
  const auto all = world.all_gather(mine);
  REQUIRE(all.size() == static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    CHECK(all[static_cast<std::size_t>(r)] ==
          (r == 1 ? std::string() : std::string(static_cast<std::size_t>(r) * 3 + 1, 'a' + r % 26)));
  }
}

int main(int argc, char** argv) {
  mla::mpi::Environment mpi(argc, argv);
  doctest::Context context(argc, argv);
  const int failed = context.run();
  mla::mpi::Communicator world;
  // The job fails when any rank failed (every rank's exit status reaches mpirun).
  return world.sum_in_rank_order(static_cast<double>(failed != 0)) > 0 ? 1 : 0;
}
