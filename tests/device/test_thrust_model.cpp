// The whole model on the Thrust/CUDA device against the CPU backend, for every attention
// variant: the loss and every parameter gradient, twenty training steps, prefill + decode
// against one full forward (and MLA's absorbed path against the materialized one), a
// checkpoint written on one device read on the other, and no device allocation in warm steps.
#include "device/device_check.hpp"
#include "support/decode.hpp"
#include "support/policies.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

using namespace mla;        // NOLINT: test file
using namespace mla::test;  // NOLINT: the policies and small_config
using mla::test::Dev;
using mla::test::rel_diff;
using mla::test::to_device;
using mla::test::to_host;

namespace {

Tensor<std::int32_t> host_ids(Shape s, std::int64_t vocab, std::uint64_t seed) {
  return to_host(test::device_ids<Cpu>(s, vocab, seed));
}

/// The loss and the flat gradient of `model` on (ids, targets), with dropout when asked.
template <class P, Device D>
std::pair<float, Tensor<float>> loss_and_grads(GPT<P, float, D>& model, const Tensor<std::int32_t>& ids,
                                               const Tensor<std::int32_t>& targets, float dropout) {
  Tape<float, D> tape;
  model.parameters().zero_grad();
  const Var<float, D> loss = model.loss(tape, to_device<D>(ids), to_device<D>(targets), {.dropout = dropout, .seed = 5});
  loss.backward();
  return {to_host(loss.value())[0], to_host(model.parameters().grads())};
}

/// Losses of `steps` AdamW steps (clipped at 1) on fixed random batches.
template <class P, Device D>
std::vector<float> train(GPT<P, float, D>& model, AdamW<float, D>& opt, int steps, int first_step = 0) {
  std::vector<float> losses;
  Tape<float, D> tape;
  for (int s = first_step; s < first_step + steps; ++s) {
    const auto ids = host_ids({2, 12}, model.config().vocab_size, 1000 + static_cast<std::uint64_t>(s));
    const auto targets = host_ids({2, 12}, model.config().vocab_size, 2000 + static_cast<std::uint64_t>(s));
    tape.clear();
    model.parameters().zero_grad();
    const Var<float, D> loss = model.loss(tape, to_device<D>(ids), to_device<D>(targets));
    loss.backward();
    const double scale = clip_factor(grad_norm(model.parameters()), 1.0);
    opt.step(model.parameters(), 3e-3, scale);
    losses.push_back(to_host(loss.value())[0]);
  }
  return losses;
}

}  // namespace

#define ALL_POLICIES MLA_TEST_ALL_POLICIES

TEST_CASE_TEMPLATE("thrust model: the loss and every parameter gradient equal the CPU's", P, ALL_POLICIES) {
  GPT<P, float, Cpu> cpu(small_config(), 7);
  GPT<P, float, Dev> dev(small_config(), 7);
  REQUIRE(test::bit_identical(to_host(dev.parameters().values()), cpu.parameters().values()));
  const auto ids = host_ids({2, 16}, 37, 1), targets = host_ids({2, 16}, 37, 2);
  for (float dropout : {0.0f, 0.2f}) {
    CAPTURE(dropout);
    const auto [lc, gc] = loss_and_grads(cpu, ids, targets, dropout);
    const auto [ld, gd] = loss_and_grads(dev, ids, targets, dropout);
    CHECK(ld == doctest::Approx(lc).epsilon(1e-5));
    CHECK(rel_diff(gd, gc) <= 1e-4);
  }
}

TEST_CASE("thrust model: MLA with an RMSNorm latent and with none, loss and gradients equal the CPU's") {
  for (LatentNorm norm : {LatentNorm::RmsNorm, LatentNorm::None}) {
    CAPTURE(to_string(norm));
    ModelConfig cfg = small_config();
    cfg.latent_norm = norm;
    GPT<MlaRope, float, Cpu> cpu(cfg, 7);
    GPT<MlaRope, float, Dev> dev(cfg, 7);
    const auto ids = host_ids({2, 16}, 37, 1), targets = host_ids({2, 16}, 37, 2);
    const auto [lc, gc] = loss_and_grads(cpu, ids, targets, 0.0f);
    const auto [ld, gd] = loss_and_grads(dev, ids, targets, 0.0f);
    CHECK(ld == doctest::Approx(lc).epsilon(1e-5));
    CHECK(rel_diff(gd, gc) <= 1e-4);
    CHECK(decode_vs_forward(dev, 2, 4, 16, CacheMode::Latent, DecodePath::Absorbed, 4) <= 1e-4);
  }
}

TEST_CASE_TEMPLATE("thrust model: 20 training steps follow the CPU's loss curve", P, ALL_POLICIES) {
  GPT<P, float, Cpu> cpu(small_config(), 3);
  GPT<P, float, Dev> dev(small_config(), 3);
  AdamW<float, Cpu> opt_cpu(cpu.parameters(), {});
  AdamW<float, Dev> opt_dev(dev.parameters(), {});
  const auto lc = train(cpu, opt_cpu, 20), ld = train(dev, opt_dev, 20);
  CHECK(lc.back() < lc.front());  // it learns: the comparison is of a curve that moves
  for (std::size_t i = 0; i < lc.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(ld[i] - lc[i]) <= 1e-4);
  }
}

TEST_CASE_TEMPLATE("thrust decode: prefill + token-by-token decode equals one full forward", P, ALL_POLICIES) {
  GPT<P, float, Dev> model(small_config(), 11);
  for (std::int64_t B : {1, 3}) {
    CAPTURE(B);
    CHECK(decode_vs_forward(model, B, 5, 20, GPT<P, float, Dev>::kDefaultCacheMode, DecodePath::Auto, 100 + B) <= 1e-4);
  }
}

TEST_CASE_TEMPLATE("thrust decode: MLA absorbed, materialized and full-cache paths agree with the forward", P, MlaRope,
                   MlaNoRope, MlaNoQ) {
  GPT<P, float, Dev> model(small_config(), 12);
  CHECK(decode_vs_forward(model, 3, 6, 24, CacheMode::Latent, DecodePath::Absorbed, 1) <= 1e-4);
  CHECK(decode_vs_forward(model, 3, 6, 24, CacheMode::Latent, DecodePath::Materialized, 2) <= 1e-4);
  CHECK(decode_vs_forward(model, 3, 6, 24, CacheMode::Full, DecodePath::Auto, 3) <= 1e-4);
}

TEST_CASE_TEMPLATE("thrust checkpoint: written on the device, evaluated and resumed on either device", P, Gqa, MlaRope) {
  const auto dir = std::filesystem::temp_directory_path() / ("mla_thrust_ckpt_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "run.safetensors";
  GPT<P, float, Dev> dev(small_config(), 21);
  AdamW<float, Dev> opt_dev(dev.parameters(), {});
  train(dev, opt_dev, 3);
  save_training_checkpoint(path, dev, opt_dev, TrainProgress{.step = 3, .seed = 1});

  GPT<P, float, Cpu> cpu(small_config(), 99);
  AdamW<float, Cpu> opt_cpu(cpu.parameters(), {});
  CHECK(load_training_checkpoint(path, cpu, opt_cpu).step == 3);
  CHECK(test::bit_identical(cpu.parameters().values(), to_host(dev.parameters().values())));
  const auto ids = host_ids({2, 16}, 37, 8), targets = host_ids({2, 16}, 37, 9);
  CHECK(loss_and_grads(cpu, ids, targets, 0).first == doctest::Approx(loss_and_grads(dev, ids, targets, 0).first).epsilon(1e-5));

  // Resumed on the other device, and on the same one: three more steps each follow the run.
  GPT<P, float, Dev> again(small_config(), 98);
  AdamW<float, Dev> opt_again(again.parameters(), {});
  load_training_checkpoint(path, again, opt_again);
  const auto straight = train(dev, opt_dev, 3, 3);
  const auto on_cpu = train(cpu, opt_cpu, 3, 3), on_dev = train(again, opt_again, 3, 3);
  for (std::size_t i = 0; i < straight.size(); ++i) {
    CHECK(on_dev[i] == straight[i]);
    CHECK(std::abs(on_cpu[i] - straight[i]) <= 1e-4);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("thrust memory: warm training and decode steps allocate nothing on the device") {
  GPT<MlaRope, float, Dev> model(small_config(), 5);
  AdamW<float, Dev> opt(model.parameters(), {});
  const auto ids = to_device<Dev>(host_ids({2, 16}, 37, 1)), targets = to_device<Dev>(host_ids({2, 16}, 37, 2));
  Tape<float, Dev> tape;
  auto step = [&] {
    tape.clear();
    model.parameters().zero_grad();
    const auto loss = model.loss(tape, ids, targets);
    loss.backward();
    opt.step(model.parameters(), 1e-3, clip_factor(grad_norm(model.parameters()), 1.0));
  };
  step();
  step();
  const std::int64_t before_train = mla::gpu::allocation_count();
  step();
  step();
  CHECK(mla::gpu::allocation_count() == before_train);

  auto cache = model.make_cache(2, 40);
  Tensor<float, Dev> logits = model.prefill({{1, 2, 3}, {4, 5}}, cache);
  const std::vector<std::int32_t> next{6, 7};
  logits = model.decode(next, cache);
  logits = model.decode(next, cache);
  const std::int64_t before_decode = mla::gpu::allocation_count();
  for (int i = 0; i < 4; ++i) logits = model.decode(next, cache);
  CHECK(mla::gpu::allocation_count() == before_decode);
}
