// mla/autodiff/ops/matmul.hpp — matrix product, batched over leading axes.
//
//   a [..., M, K] (Transpose::Yes: [..., K, M]),  b [K, N] or [..., K, N] (Yes: [..., N, K])
//   out [..., M, N] = op(a) @ op(b)
// A rank-2 `b` is shared by every batch (a Linear layer: x @ W.T is matmul(x, W, No, Yes));
// otherwise `b` has the same leading axes as `a`.
//
//   linear(x [..., In], w [Out, In], bias [Out]) -> [..., Out] = x @ w.T + bias
// PyTorch's Linear as one op: the bias seeds the GEMM's output, and its gradient is the column
// sums of dout, so neither direction makes a separate pass over the output for the bias.
#pragma once

#include "mla/autodiff/op_support.hpp"
#include "mla/backend/kernels.hpp"

namespace mla {

template <class T, Device D>
Var<T, D> matmul(const Var<T, D>& a, const Var<T, D>& b, Transpose ta = Transpose::No,
                 Transpose tb = Transpose::No) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  if (sa.rank() < 2 || sb.rank() < 2) {
    throw ShapeError("matmul: operands need rank >= 2, got " + detail::shapes(sa, sb));
  }
  const bool shared_b = sb.rank() == 2;
  if (!shared_b) {
    bool same_batch = sb.rank() == sa.rank();
    for (int i = 0; same_batch && i < sa.rank() - 2; ++i) same_batch = sa[i] == sb[i];
    if (!same_batch) {
      throw ShapeError("matmul: batch axes differ: a " + sa.str() + " and b " + sb.str());
    }
  }
  const std::int64_t M = ta == Transpose::Yes ? sa[-1] : sa[-2];
  const std::int64_t K = ta == Transpose::Yes ? sa[-2] : sa[-1];
  const std::int64_t Kb = tb == Transpose::Yes ? sb[-1] : sb[-2];
  const std::int64_t N = tb == Transpose::Yes ? sb[-2] : sb[-1];
  if (K != Kb) {
    throw ShapeError("matmul: inner dimensions differ (" + std::to_string(K) + " vs " +
                     std::to_string(Kb) + "): a " + sa.str() + " and b " + sb.str());
  }
  const std::int64_t batch = sa.numel() / (M * K == 0 ? 1 : M * K);
  Shape so = sa;
  so[-2] = M;
  so[-1] = N;
  const std::int64_t sta = M * K, stb = shared_b ? 0 : K * N, stc = M * N;

  Tape<T, D>* tape = detail::common_tape("matmul", a, b);
  Tensor<T, D> out = detail::new_output(tape, so);
  kernels::gemm_batched(D{}, ta, tb, batch, M, N, K, T(1), a.value().data(), sta,
                        b.value().data(), stb, T(0), out.data(), stc);
  if (!detail::records(a, b)) return detail::unrecorded(out, tape);

  return tape->record(out, [A = a.value(), B = b.value(), ia = a.node(), ib = b.node(), ta, tb,
                            batch, M, N, K, sta, stb, stc](Tape<T, D>& t, const Tensor<T, D>& dC) {
    if (const auto dA = t.grad_target(ia)) {  // d op(a) = dC @ op(b)^T
      const T beta = dA.accumulate ? T(1) : T(0);
      if (ta == Transpose::No) {
        kernels::gemm_batched(D{}, Transpose::No, !tb, batch, M, K, N, T(1), dC.data(), stc,
                              B.data(), stb, beta, dA.grad.data(), sta);
      } else {
        kernels::gemm_batched(D{}, tb, Transpose::Yes, batch, K, M, N, T(1), B.data(), stb,
                              dC.data(), stc, beta, dA.grad.data(), sta);
      }
    }
    if (auto dB = t.grad_sink(ib)) {  // d op(b) = op(a)^T @ dC, summed over a shared b
      const std::int64_t stdb = stb;  // 0 when b is shared: the batches reduce into one dB
      if (tb == Transpose::No) {
        kernels::gemm_batched(D{}, !ta, Transpose::No, batch, K, N, M, T(1), A.data(), sta,
                              dC.data(), stc, T(1), dB.data(), stdb);
      } else {
        kernels::gemm_batched(D{}, Transpose::Yes, ta, batch, N, K, M, T(1), dC.data(), stc,
                              A.data(), sta, T(1), dB.data(), stdb);
      }
    }
  });
}

template <class T, Device D>
Var<T, D> linear(const Var<T, D>& x, const Var<T, D>& w, const Var<T, D>& bias) {
  const Shape &sx = x.shape(), &sw = w.shape();
  if (sx.rank() < 1 || sw.rank() != 2 || sx[-1] != sw[1] || bias.shape().rank() != 1 || bias.shape()[0] != sw[0]) {
    throw ShapeError("linear: x " + sx.str() + ", weight " + sw.str() + " and bias " + bias.shape().str() +
                     " do not fit x [..., In] @ weight [Out, In].T + bias [Out]");
  }
  const std::int64_t R = sx.rows(), In = sw[1], Out = sw[0];
  Shape so = sx;
  so[-1] = Out;
  Tape<T, D>* tape = detail::common_tape("linear", x, w, bias);
  Tensor<T, D> out = detail::new_output(tape, so);
  kernels::linear_forward(D{}, R, Out, In, x.value().data(), w.value().data(), bias.value().data(), out.data());
  if (!detail::records(x, w, bias)) return detail::unrecorded(out, tape);

  return tape->record(out, [X = x.value(), W = w.value(), ix = x.node(), iw = w.node(), ib = bias.node(), R, In,
                            Out](Tape<T, D>& t, const Tensor<T, D>& dout) {
    if (const auto dx = t.grad_target(ix)) {  // dx = dout @ w
      kernels::gemm(D{}, Transpose::No, Transpose::No, R, In, Out, T(1), dout.data(), W.data(),
                    dx.accumulate ? T(1) : T(0), dx.grad.data());
    }
    // dw = dout^T @ x and db = the column sums of dout, in one pass where the kernel can.
    auto dw = t.grad_sink(iw), db = t.grad_sink(ib);
    kernels::linear_param_grads(D{}, R, Out, In, dout.data(), X.data(), dw ? dw.data() : nullptr,
                                db ? db.data() : nullptr);
  });
}

template <class T, class U, Device D>
  requires(!std::same_as<T, U>)
Var<T, D> matmul(const Var<T, D>&, const Var<U, D>&, Transpose = Transpose::No,
                 Transpose = Transpose::No) {
  static_assert(detail::always_false<T, U>,
                "mla::matmul: operands have different scalar types (float and double do not mix)");
}

}  // namespace mla
