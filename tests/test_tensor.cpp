// Tensor core: shapes, views, storage, arena.
#include <doctest/doctest.h>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_throws_naming;

TEST_CASE("shape: rank, numel, rows and cols") {
  Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s.rows() == 6);
  CHECK(s.cols() == 4);
  CHECK(s[-1] == 4);
  CHECK(s.str() == "[2, 3, 4]");
  CHECK(s.without_cols() == Shape{2, 3});
  CHECK(Shape{5}.without_cols() == Shape{});
  CHECK(Shape{}.without_cols() == Shape{});
  CHECK(s.without_cols().appended(7) == Shape{2, 3, 7});
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{}.str() == "[]");
  check_throws_naming<ShapeError>([] { Shape{1, 2, 3, 4, 5}; }, {"rank 5"});
  check_throws_naming<ShapeError>([] { Shape{2, -1}; }, {"negative"});
  check_throws_naming<ShapeError>([&] { (void)s[3]; }, {"axis 3", "[2, 3, 4]"});
}

TEST_CASE_TEMPLATE("tensor: storage is 64-byte aligned, views share it", T, float, double) {
  auto t = Tensor<T>::zeros({3, 5});
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(i);
  CHECK(t.at(1, 2) == T(7));

  auto r = t.reshape({15});
  CHECK(r.data() == t.data());
  r[0] = T(42);
  CHECK(t.at(0, 0) == T(42));

  auto heads = Tensor<T>::zeros({2, 3, 8}).split_heads(4);
  CHECK(heads.shape() == Shape{2, 3, 4, 2});
  CHECK(heads.merge_heads().shape() == Shape{2, 3, 8});

  auto rows = t.slice(1, 3);
  CHECK(rows.shape() == Shape{2, 5});
  CHECK(rows.data() == t.data() + 5);

  auto c = t.clone();
  CHECK(c.data() != t.data());
  CHECK(c.to_vector() == t.to_vector());

  check_throws_naming<ShapeError>([&] { (void)t.reshape({4, 4}); }, {"reshape", "[3, 5]", "[4, 4]"});
  check_throws_naming<ShapeError>([&] { (void)t.split_heads(2); }, {"split_heads", "[3, 5]"});
  check_throws_naming<ShapeError>([&] { (void)t.slice(2, 4); }, {"slice", "[3, 5]"});
  check_throws_naming<ShapeError>([] { (void)Tensor<T>::from({2, 2}, {T(1), T(2), T(3)}); },
                                  {"3 values", "[2, 2]"});
}

TEST_CASE("arena: steady state reuses one block, live tensors survive a reset") {
  Arena<Cpu> arena;
  auto step = [&] {
    for (int i = 0; i < 10; ++i) (void)Tensor<float>::empty({1000, 100}, arena);  // 400 kB each
  };
  step();
  arena.reset();  // folds the grown blocks into one of the total size
  const std::size_t capacity = arena.capacity();
  CHECK(capacity >= 10 * 400000);
  for (int i = 0; i < 3; ++i) {
    step();
    arena.reset();
    CHECK(arena.capacity() == capacity);
  }

  auto kept = Tensor<float>::empty({4}, arena);
  kept[0] = 1.5f;
  arena.reset();
  (void)Tensor<float>::empty({4}, arena);  // must not land on `kept`
  CHECK(kept[0] == 1.5f);
}
