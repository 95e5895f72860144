// Every differentiable op on the Thrust/CUDA device: forward and backward against the CPU
// backend in float (from the same inputs and seed gradient), and the Jacobian in double on the
// device itself against central differences.
#include "device/device_check.hpp"

#include <array>
#include <span>
#include <string>
#include <type_traits>

using namespace mla;  // NOLINT: test file
using mla::test::Dev;
using mla::test::random_tensor;

namespace {

/// The scalar type and the device of the values in a lambda's `vars`.
template <class Vars>
using ScalarOf = typename std::remove_cvref_t<decltype(std::declval<Vars>()[0].value())>::Scalar;
template <class Vars>
using DeviceOf = typename std::remove_cvref_t<decltype(std::declval<Vars>()[0].value())>::DeviceType;

/// Both checks of one op: `f` is generic over the tape (CPU or device, float or double).
template <class F>
void check_op(F f, std::vector<Shape> shapes, double float_tol = 1e-5, double jacobian_tol = 1e-6) {
  std::vector<Tensor<double>> inputs;
  std::uint64_t seed = 1;
  for (const Shape& s : shapes) inputs.push_back(random_tensor(s, seed++));
  SUBCASE("float, against the CPU backend") { test::check_matches_cpu<Dev>(f, inputs, float_tol); }
  SUBCASE("double, Jacobian on the device") { test::check_jacobian_on<Dev>(f, inputs, jacobian_tol); }
}

}  // namespace

TEST_CASE("thrust ops: element-wise, with and without a broadcast row, and reductions") {
  SUBCASE("add") { check_op([](auto&, auto& v) { return add(v[0], v[1]); }, {{3, 5}, {3, 5}}); }
  SUBCASE("sub, row") { check_op([](auto&, auto& v) { return sub(v[0], v[1]); }, {{4, 3, 5}, {5}}); }
  SUBCASE("mul, row") { check_op([](auto&, auto& v) { return mul(v[0], v[1]); }, {{7, 6}, {6}}); }
  SUBCASE("mul") { check_op([](auto&, auto& v) { return mul(v[0], v[1]); }, {{2, 9}, {2, 9}}); }
  SUBCASE("scale") {
    check_op([](auto&, auto& v) { return scale(v[0], ScalarOf<decltype(v)>(0.75)); }, {{11}});
  }
  SUBCASE("relu") { check_op([](auto&, auto& v) { return relu(v[0]); }, {{5, 7}}); }
  SUBCASE("gelu") { check_op([](auto&, auto& v) { return gelu(v[0]); }, {{5, 7}}); }
  SUBCASE("sum and mean") { check_op([](auto&, auto& v) { return add(sum(v[0]), mean(v[1])); }, {{4, 5}, {3, 2}}); }
}

TEST_CASE("thrust ops: products") {
  SUBCASE("matmul, batched") {
    check_op([](auto&, auto& v) { return matmul(v[0], v[1]); }, {{2, 3, 4}, {2, 4, 5}});
  }
  SUBCASE("matmul, shared b, transposed") {
    check_op([](auto&, auto& v) { return matmul(v[0], v[1], Transpose::No, Transpose::Yes); }, {{2, 3, 4}, {6, 4}});
  }
  SUBCASE("matmul, a transposed") {
    check_op([](auto&, auto& v) { return matmul(v[0], v[1], Transpose::Yes, Transpose::No); }, {{3, 4, 2}, {3, 4, 5}});
  }
  SUBCASE("linear") { check_op([](auto&, auto& v) { return linear(v[0], v[1], v[2]); }, {{2, 3, 4}, {5, 4}, {5}}); }
}

TEST_CASE("thrust ops: norms and softmax") {
  SUBCASE("layernorm") {
    check_op([](auto&, auto& v) { return layernorm(v[0], v[1], v[2], ScalarOf<decltype(v)>(1e-5)); },
             {{37, 6}, {6}, {6}});
  }
  SUBCASE("rmsnorm") {
    check_op([](auto&, auto& v) { return rmsnorm(v[0], v[1], ScalarOf<decltype(v)>(1e-5)); }, {{37, 6}, {6}});
  }
  SUBCASE("softmax") { check_op([](auto&, auto& v) { return softmax(v[0]); }, {{4, 9}}); }
}

TEST_CASE("thrust ops: losses") {
  SUBCASE("cross_entropy") {
    check_op([](auto&, auto& v) {
      return cross_entropy(v[0], test::device_ids<DeviceOf<decltype(v)>>({2, 3}, 7, 5));
    }, {{2, 3, 7}});
  }
  SUBCASE("linear_cross_entropy, in chunks of 4 rows") {
    check_op([](auto&, auto& v) {
      return linear_cross_entropy(v[0], v[1], v[2], test::device_ids<DeviceOf<decltype(v)>>({2, 5}, 7, 6), 4);
    }, {{2, 5, 3}, {7, 3}, {7}});
  }
}

TEST_CASE("thrust ops: embeddings, RoPE and dropout") {
  SUBCASE("embedding, repeated ids") {
    check_op([](auto&, auto& v) { return embedding(v[0], test::device_ids<DeviceOf<decltype(v)>>({3, 4}, 5, 7)); },
             {{5, 6}});
  }
  SUBCASE("rope from an offset") { check_op([](auto&, auto& v) { return rope(v[0], std::int64_t{3}); }, {{2, 3, 2, 8}}); }
  SUBCASE("rope, one offset per row") {
    check_op([](auto&, auto& v) {
      const std::array<std::int64_t, 3> starts{0, 5, 2};
      return rope(v[0], std::span<const std::int64_t>(starts), 500.0);
    }, {{3, 2, 6}});
  }
  SUBCASE("dropout") {
    check_op([](auto&, auto& v) { return dropout(v[0], ScalarOf<decltype(v)>(0.3), 42); }, {{6, 11}});
  }
}

TEST_CASE("thrust ops: layout") {
  SUBCASE("split and concat") {
    check_op([](auto&, auto& v) {
      auto parts = split(v[0], {2, 3});
      return concat({parts[1], v[1], parts[0]});
    }, {{3, 5}, {3, 2}});
  }
  SUBCASE("permute") { check_op([](auto&, auto& v) { return permute(v[0], {0, 2, 1, 3}); }, {{2, 3, 4, 5}}); }
  SUBCASE("reshape and heads") {
    check_op([](auto&, auto& v) { return mul(merge_heads(split_heads(v[0], 2)), v[1]); }, {{3, 6}, {3, 6}});
  }
  SUBCASE("expand_heads") { check_op([](auto&, auto& v) { return nn::expand_heads(v[0], 3); }, {{2, 3, 4}}); }
}

TEST_CASE("thrust ops: causal attention") {
  SUBCASE("MHA") {
    check_op([](auto&, auto& v) { return causal_attention(v[0], v[1], v[2]); }, {{1, 2, 5, 4}, {1, 2, 5, 4}, {1, 2, 5, 4}});
  }
  SUBCASE("GQA, Dk != Dv") {
    check_op([](auto&, auto& v) { return causal_attention(v[0], v[1], v[2]); }, {{2, 4, 4, 6}, {2, 2, 4, 6}, {2, 2, 4, 3}});
  }
  SUBCASE("MQA, fewer queries than keys") {
    check_op([](auto&, auto& v) { return causal_attention(v[0], v[1], v[2]); }, {{1, 3, 2, 4}, {1, 1, 5, 4}, {1, 1, 5, 4}});
  }
}
