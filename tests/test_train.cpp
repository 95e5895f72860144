// Training pieces: AdamW, gradient clipping, the learning-rate schedule, token files.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <mla/train/adamw.hpp>
#include <mla/train/schedule.hpp>
#include <mla/train/token_file.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_throws_naming;
namespace fs = std::filesystem;

TEST_CASE("adamw: two steps match PyTorch's update, decay on matrices only") {
  ParameterStore<double> store;
  const auto w = store.declare("w", {1, 2}, ParamInit::Zeros);
  const auto b = store.declare("b", {1}, ParamInit::Zeros);
  store.allocate();
  store.value(w)[0] = 1.0;
  store.value(w)[1] = -2.0;
  store.value(b)[0] = 0.5;
  AdamW<double> opt(store, AdamWOptions{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1});
  // Reference, written out from torch.optim.AdamW's algorithm.
  double p[3] = {1.0, -2.0, 0.5}, m[3] = {}, v[3] = {};
  const double grads[2][3] = {{0.3, -0.1, 2.0}, {-0.5, 0.2, 1.0}};
  const bool decay[3] = {true, true, false};
  const double lr = 0.01;
  for (int t = 1; t <= 2; ++t) {
    store.grad(w)[0] = grads[t - 1][0];
    store.grad(w)[1] = grads[t - 1][1];
    store.grad(b)[0] = grads[t - 1][2];
    opt.step(store, lr);
    for (int i = 0; i < 3; ++i) {
      if (decay[i]) p[i] *= 1 - lr * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * grads[t - 1][i];
      v[i] = 0.999 * v[i] + 0.001 * grads[t - 1][i] * grads[t - 1][i];
      const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
      p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
    }
    CHECK(store.value(w)[0] == doctest::Approx(p[0]).epsilon(1e-14));
    CHECK(store.value(w)[1] == doctest::Approx(p[1]).epsilon(1e-14));
    CHECK(store.value(b)[0] == doctest::Approx(p[2]).epsilon(1e-14));
  }
  CHECK(opt.steps() == 2);
}

TEST_CASE("clipping: the norm of every gradient, and the factor that caps it") {
  ParameterStore<float> store;
  const auto a = store.declare("a", {3}, ParamInit::Zeros);
  const auto c = store.declare("c", {2, 2}, ParamInit::Zeros);
  store.allocate();
  store.grad(a)[0] = 3.0f;
  store.grad(c)[3] = 4.0f;
  CHECK(grad_norm(store) == doctest::Approx(5.0));
  CHECK(clip_factor(5.0, 1.0) == doctest::Approx(0.2).epsilon(1e-6));
  CHECK(clip_factor(0.5, 1.0) == 1.0);
}

TEST_CASE("schedule: linear warmup, cosine to 0.1 x peak at the last step") {
  CosineSchedule s{.peak = 1e-3, .warmup = 10, .total = 110};
  CHECK(s(0) == doctest::Approx(1e-4));
  CHECK(s(9) == doctest::Approx(1e-3));
  CHECK(s(10) == doctest::Approx(1e-3));
  CHECK(s(60) == doctest::Approx(0.55e-3));  // half way: (peak + floor) / 2
  CHECK(s(110) == doctest::Approx(1e-4));
  for (int i = 11; i < 110; ++i) CHECK(s(i) < s(i - 1));
}

TEST_CASE("token files: round trip, and every malformed file named") {
  const fs::path dir = fs::temp_directory_path() / ("mla_tokens_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::vector<std::uint16_t> tokens{1, 2, 65535, 0, 7};
  write_tokens(dir / "t.bin", tokens);
  CHECK(fs::file_size(dir / "t.bin") == 1024 + 10);
  CHECK(read_tokens(dir / "t.bin") == tokens);
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "t.bin", 1000); },
                               {"t.bin", "token 65535", "position 2", "vocabulary size 1000"});
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "none.bin"); }, {"none.bin", "cannot open"});
  auto image = [&] {
    std::ifstream in(dir / "t.bin", std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  auto write = [&](const std::vector<char>& bytes) {
    std::ofstream out(dir / "bad.bin", std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  auto bad = image;
  bad[0] = 0;
  write(bad);
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "bad.bin"); }, {"bad.bin", "wrong magic"});
  bad = image;
  bad[4] = 2;
  write(bad);
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "bad.bin"); }, {"version 2"});
  bad = image;
  bad.pop_back();
  write(bad);
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "bad.bin"); }, {"does not match its header"});
  write(std::vector<char>(100));
  check_throws_naming<IoError>([&] { (void)read_tokens(dir / "bad.bin"); }, {"truncated"});
  fs::remove_all(dir);
}

TEST_CASE("evaluation windows: k*T + T + 1 <= N, targets shifted by one") {
  CHECK(eval_windows(10, 3) == 3);  // windows 0..2 use tokens up to index 9
  CHECK(eval_windows(9, 3) == 2);
  CHECK(eval_windows(3, 3) == 0);
  std::vector<std::uint16_t> tokens(10);
  for (int i = 0; i < 10; ++i) tokens[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(i);
  auto ids = Tensor<std::int32_t>::empty({2, 3}), targets = Tensor<std::int32_t>::empty({2, 3});
  fill_eval_batch(tokens, 1, 3, ids, targets);
  CHECK(ids.to_vector() == std::vector<std::int32_t>{3, 4, 5, 6, 7, 8});
  CHECK(targets.to_vector() == std::vector<std::int32_t>{4, 5, 6, 7, 8, 9});
}
