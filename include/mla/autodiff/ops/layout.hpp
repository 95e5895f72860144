// mla/autodiff/ops/layout.hpp — ops that only move elements: split and concat along the last
// axis, reshape views (split_heads, merge_heads) and axis permutations.
//
//   split(x [..., C], sizes {n0, n1, ...})  -> pieces [..., n_k], sum of n_k = C (a std::array
//                                              when the sizes are written out, else a vector)
//   concat({a [..., n0], b [..., n1], ...}) -> [..., n0 + n1 + ...]
//   reshape(x, shape)                       -> a view: same storage, no copy
//   split_heads(x [..., H*Dh], H)           -> [..., H, Dh] view;  merge_heads is its inverse
//   permute(x, perm)                        -> out axis k is x axis perm[k] (a copy), rank 2..4,
//                                              e.g. [B, T, H, Dh] -{0, 2, 1, 3}-> [B, H, T, Dh]
// Every backward is a copy the other way, accumulated (+=) into the input's gradient.
//
// Legend: B batch, T time, H heads, Dh head dim, C channels (last axis), R rows (all other
// axes flattened), n columns of one piece.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {
namespace detail {

/// "{2, 3, 4}".
template <class I>
std::string index_list_str(std::span<const I> v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "}";
}

/// Records `view` (a reshape of x's storage) as an op whose backward adds dout into dx (copies
/// it, when dx holds nothing yet).
template <class T, Device D>
Var<T, D> record_view(const char* name, const Var<T, D>& x, Tensor<T, D> view) {
  Tape<T, D>* tape = common_tape(name, x);
  if (!records(x)) return unrecorded(std::move(view), tape);
  return tape->record(std::move(view), [ix = x.node()](Tape<T, D>& t, const Tensor<T, D>& dout) {
    const auto dx = t.grad_target(ix);
    if (!dx) return;
    if (dx.accumulate) {
      kernels::accumulate(D{}, dout.data(), dx.grad.data(), dx.grad.numel());
    } else {
      D::copy(dx.grad.data(), dout.data(), static_cast<std::size_t>(dx.grad.numel()) * sizeof(T));
    }
  });
}

/// Most parts one concat node records; longer lists are concatenated in groups.
inline constexpr std::size_t kConcatInline = 32;

}  // namespace detail

// ---- split / concat along the last axis ----------------------------------------------------

namespace detail {

/// The pieces of split(x, sizes), written to pieces[0, sizes.size()).
template <class T, Device D>
void split_into(const Var<T, D>& x, std::span<const std::int64_t> sizes, Var<T, D>* pieces) {
  const Shape& s = x.shape();
  if (s.rank() < 1) throw ShapeError("split: x must have rank >= 1, got " + s.str());
  const std::int64_t C = s[-1], R = s.rows();
  std::int64_t total = 0;
  bool negative = false;
  for (std::int64_t n : sizes) {
    total += n;
    negative = negative || n < 0;
  }
  if (negative || total != C) {
    throw ShapeError(
        "split: sizes " + detail::index_list_str(sizes) +
        (negative ? " include a negative size" : " add up to " + std::to_string(total)) +
        ", but the last axis of x " + s.str() + " is C = " + std::to_string(C));
  }
  Tape<T, D>* tape = common_tape("split", x);
  const bool rec = records(x);
  std::int64_t offset = 0;
  for (std::int64_t n : sizes) {
    Tensor<T, D> piece = new_output(tape, s.with_cols(n));  // (R, n)
    kernels::copy_columns(D{}, x.value().data() + offset, C, piece.data(), n, R, n);
    if (!rec) {
      *pieces++ = unrecorded(piece, tape);
    } else {
      *pieces++ = tape->record(
          piece, [ix = x.node(), offset, n, C, R](Tape<T, D>& t, const Tensor<T, D>& dout) {
            if (auto dx = t.grad_sink(ix)) {
              kernels::accumulate_columns(D{}, dout.data(), n, dx.data() + offset, C, R, n);
            }
          });
    }
    offset += n;
  }
}

}  // namespace detail

/// Pieces of x along its last axis, of `sizes[k]` columns each (each >= 0, summing to C).
template <class T, Device D>
std::vector<Var<T, D>> split(const Var<T, D>& x, std::span<const std::int64_t> sizes) {
  std::vector<Var<T, D>> pieces(sizes.size());
  detail::split_into(x, sizes, pieces.data());
  return pieces;
}

/// split(x, {n0, n1, ...}) with the sizes written out: the pieces in a std::array, so that a
/// layer that splits every step allocates nothing.
template <class T, Device D, std::size_t N>
std::array<Var<T, D>, N> split(const Var<T, D>& x, const std::int64_t (&sizes)[N]) {
  std::array<Var<T, D>, N> pieces;
  detail::split_into(x, std::span<const std::int64_t>(sizes), pieces.data());
  return pieces;
}

/// The parts side by side along the last axis; every other axis must agree.
template <class T, Device D>
Var<T, D> concat(std::span<const Var<T, D>> parts) {
  if (parts.empty()) throw ShapeError("concat: needs at least one part");
  if (parts.size() > detail::kConcatInline) {
    // More parts than a node holds: the first kConcatInline, then that result and the next
    // kConcatInline - 1 parts, and so on.
    std::array<Var<T, D>, detail::kConcatInline> group;
    group[0] = concat(parts.first(detail::kConcatInline));
    for (parts = parts.subspan(detail::kConcatInline); !parts.empty();) {
      const std::size_t n = std::min(parts.size(), detail::kConcatInline - 1);
      std::copy_n(parts.begin(), n, group.begin() + 1);
      group[0] = concat(std::span<const Var<T, D>>(group.data(), n + 1));
      parts = parts.subspan(n);
    }
    return group[0];
  }
  const Shape& s0 = parts[0].shape();
  bool same = s0.rank() >= 1;
  std::int64_t C = 0;
  Tape<T, D>* tape = nullptr;
  for (const Var<T, D>& p : parts) {
    const Shape& sp = p.shape();
    same = same && sp.rank() == s0.rank();
    for (int i = 0; same && i + 1 < s0.rank(); ++i) same = sp[i] == s0[i];
    if (same) C += sp[-1];
    if (p.tape() != nullptr) {
      if (tape != nullptr && tape != p.tape()) {
        throw AutodiffError("concat: inputs were recorded on different tapes");
      }
      tape = p.tape();
    }
  }
  if (!same) {
    std::string all;
    for (const Var<T, D>& p : parts) all += (all.empty() ? "" : ", ") + p.shape().str();
    throw ShapeError("concat: parts must have rank >= 1 and equal leading axes, got " + all);
  }
  const std::int64_t R = s0.rows();
  Tensor<T, D> out = detail::new_output(tape, s0.with_cols(C));  // (R, C)
  std::array<std::int32_t, detail::kConcatInline> nodes{};       // node of each part
  std::array<std::int64_t, detail::kConcatInline> cols{};        // columns of each part
  bool any = false;
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const std::int64_t n = parts[k].shape()[-1];
    kernels::copy_columns(D{}, parts[k].value().data(), n, out.data() + offset, C, R, n);
    nodes[k] = parts[k].node();
    cols[k] = n;
    any = any || (GradMode::enabled() && parts[k].requires_grad());
    offset += n;
  }
  if (!any) return detail::unrecorded(out, tape);
  return tape->record(
      out, [nodes, cols, count = parts.size(), C, R](Tape<T, D>& t, const Tensor<T, D>& dout) {
        std::int64_t off = 0;
        for (std::size_t k = 0; k < count; ++k) {
          if (auto dp = t.grad_sink(nodes[k])) {
            kernels::accumulate_columns(D{}, dout.data() + off, C, dp.data(), cols[k], R, cols[k]);
          }
          off += cols[k];
        }
      });
}

template <class T, Device D>
Var<T, D> concat(const std::vector<Var<T, D>>& parts) {
  return concat(std::span<const Var<T, D>>(parts));
}
template <class T, Device D, std::size_t N>
Var<T, D> concat(const std::array<Var<T, D>, N>& parts) {
  return concat(std::span<const Var<T, D>>(parts));
}
template <class T, Device D>
Var<T, D> concat(std::initializer_list<Var<T, D>> parts) {
  return concat(std::span<const Var<T, D>>(parts.begin(), parts.size()));
}

// ---- views -------------------------------------------------------------------------------

/// The same elements under `shape` (same element count): a view sharing x's storage.
template <class T, Device D>
Var<T, D> reshape(const Var<T, D>& x, Shape shape) {
  return detail::record_view("reshape", x, x.value().reshape(shape));
}

/// [..., H*Dh] viewed as [..., H, Dh].
template <class T, Device D>
Var<T, D> split_heads(const Var<T, D>& x, std::int64_t heads) {
  return detail::record_view("split_heads", x, x.value().split_heads(heads));
}

/// [..., H, Dh] viewed as [..., H*Dh].
template <class T, Device D>
Var<T, D> merge_heads(const Var<T, D>& x) {
  return detail::record_view("merge_heads", x, x.value().merge_heads());
}

// ---- permute -----------------------------------------------------------------------------

/// A copy of x (rank 2..4) whose axis k is x's axis perm[k].
template <class T, Device D>
Var<T, D> permute(const Var<T, D>& x, std::span<const int> perm) {
  const Shape& s = x.shape();
  const int rank = s.rank();
  bool valid = rank >= 2 && rank <= 4 && static_cast<int>(perm.size()) == rank;
  std::array<bool, 4> seen{};
  for (std::size_t k = 0; valid && k < perm.size(); ++k) {
    valid = perm[k] >= 0 && perm[k] < rank && !seen[static_cast<std::size_t>(perm[k])];
    if (valid) seen[static_cast<std::size_t>(perm[k])] = true;
  }
  if (!valid) {
    throw ShapeError("permute: " + detail::index_list_str(perm) + " is not a permutation of the " +
                     std::to_string(rank) + " axes of x " + s.str() +
                     (rank < 2 || rank > 4 ? " (permute needs rank 2 to 4)" : ""));
  }
  // Pad to rank 4 with leading axes of size 1.
  const int pad = 4 - rank;
  kernels::Dims4 dims{1, 1, 1, 1};
  kernels::Perm4 p4{0, 1, 2, 3};
  Shape so;
  for (int k = 0; k < rank; ++k) {
    dims[static_cast<std::size_t>(pad + k)] = s[k];
    p4[static_cast<std::size_t>(pad + k)] = perm[static_cast<std::size_t>(k)] + pad;
    so = so.appended(s[perm[static_cast<std::size_t>(k)]]);
  }
  Tape<T, D>* tape = detail::common_tape("permute", x);
  Tensor<T, D> out = detail::new_output(tape, so);
  kernels::permute_forward(D{}, x.value().data(), dims, p4, out.data());
  if (!detail::records(x)) return detail::unrecorded(out, tape);
  return tape->record(out, [ix = x.node(), dims, p4](Tape<T, D>& t, const Tensor<T, D>& dout) {
    if (const auto dx = t.grad_target(ix)) {
      kernels::permute_backward(D{}, dout.data(), dims, p4, dx.grad.data(), dx.accumulate);
    }
  });
}

template <class T, Device D, std::size_t N>
Var<T, D> permute(const Var<T, D>& x, const std::array<int, N>& perm) {
  return permute(x, std::span<const int>(perm));
}
template <class T, Device D>
Var<T, D> permute(const Var<T, D>& x, std::initializer_list<int> perm) {
  return permute(x, std::span<const int>(perm.begin(), perm.size()));
}

}  // namespace mla
