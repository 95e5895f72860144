// mla/backend/kernels.hpp — the kernel interface: every entry point the model, layer and
// autodiff code calls, and the backends that implement them. The only header outside
// backend/ that includes backend headers (with mla/backend/devices.hpp, the device tags).
//
// A backend is a device tag D (a type satisfying mla::Device, core/device.hpp) and one overload
// of each function below in namespace mla::kernels, taking D{} first. Pointers are device
// memory of D; sizes and scalars are host values. Shared vocabulary (Transpose, Binary, Dims4,
// Perm4, AttentionShape, CachedAttentionShape, AdamWStep, dropout_hash) is in
// mla/backend/types.hpp. "(+)=" adds when `accumulate` is true and overwrites otherwise; "+="
// always adds. Legend: R rows, C columns, n elements, B batch, T new tokens, H query heads,
// G kv heads, S cache slots, V vocab.
//
// Products                                                                    [gemm.hpp, linear.hpp]
//   gemm(D, ta, tb, M, N, K, alpha, A, B, beta, C)            C[M,N] = alpha op(A) op(B) + beta C
//   gemm_batched(D, ta, tb, batch, M, N, K, alpha, A, sa, B, sb, beta, C, sc)
//                                                 strides in elements; sb = 0 shares B; sc = 0 sums into one C
//   linear_forward(D, R, Out, In, x, w, bias, y)              y[R,Out] = x[R,In] w[Out,In]^T + bias[Out]
//   linear_param_grads(D, R, Out, In, dout, x, dw, db)        dw += dout^T x, db += colsum(dout) (either null)
// Element-wise and reductions                                                       [elementwise.hpp]
//   binary_forward(D, op, a, b, b_row, out, R, C)             out = a op b; b [R,C] or a row [C]
//   binary_backward(D, op, a, b, b_row, dout, da, db, R, C, acc_a, acc_b)
//   scale_forward(D, x, s, out, n)   scale_backward(D, s, dout, dx, n, acc)   dx (+)= s dout
//   scale_by_backward(D, s, dout, dx, n, acc)                 the same with s in device memory (1)
//   relu_forward/gelu_forward(D, x, out, n)   relu_backward/gelu_backward(D, x, dout, dx, n, acc)
//   sum_forward(D, x, out, n)                                 out[0] = sum x
//   fill_backward(D, dout, s, dx, n)                          dx += s dout[0]
//   accumulate(D, dout, dx, n)                                dx += dout
// Layout                                                                                 [layout.hpp]
//   copy_columns(D, src, ld_src, dst, ld_dst, R, n)           dst[r, :n] = src[r, :n]
//   accumulate_columns(D, src, ld_src, dst, ld_dst, R, n)     dst[r, :n] += src[r, :n]
//   permute_forward(D, x, dims, perm, out)    permute_backward(D, dout, dims, perm, dx, acc)   rank 4
// Norms                                                                                    [norm.hpp]
//   layernorm_forward(D, x, w, b, eps, y, mean, rstd, R, C)   rmsnorm_forward(D, x, w, eps, y, rstd, R, C)
//   layernorm_backward(D, dy, x, w, mean, rstd, dx, dw, db, scratch, R, C)     += into each non-null
//   rmsnorm_backward(D, dy, x, w, rstd, dx, dw, scratch, R, C)
//   layernorm_backward_scratch(D, R, C), rmsnorm_backward_scratch(D, R, C)     scratch elements
// Softmax and the loss                                                                  [softmax.hpp]
//   softmax_forward(D, x, y, R, C)   softmax_backward(D, y, dy, dx, R, C)      dx += y (dy - sum(dy y))
//   find_bad_target(D, targets, N, V) -> host int64            first index outside [0, V), or -1
//   crossentropy_forward(D, logits, targets, lse, loss, R, V)  loss[0] = mean(lse - target logit)
//   crossentropy_backward(D, logits, targets, lse, dloss, dlogits, R, V, acc)
//   crossentropy_rows(D, logits, targets, lse, R, V, sum)      sum[0] = sum_r (lse - target logit), double
//   crossentropy_rows_grad(D, logits, targets, lse, target_logits, g, R, V, sum)   logits -> dlogits
//   mean_of_sums(D, sums, count, N, out)                       out[0] = (sum of the double sums) / N
// Embeddings, RoPE, dropout                                      [embedding.hpp, rope.hpp, dropout.hpp]
//   embedding_first_bad_id(D, ids, N, V) -> host int64   embedding_id_at(D, ids, n) -> host int32
//   embedding_forward(D, weight, ids, out, N, C)   embedding_backward(D, ids, dout, dweight, N, C)  +=
//   rope_table(D, start, base, P, T, R, theta, table)          table[P,T,R] = cos | sin at base + start[p] + t;
//                                                              start int32 [P], or null (all rows at base)
//   rope_forward(D, x, table, out, B, T, H, R, P)   rope_backward(D, table, dout, dx, B, T, H, R, P, acc)
//   dropout_forward(D, x, y, n, p, seed)   dropout_backward(D, dy, dx, n, p, seed)   +=
// Attention                                                       [attention.hpp, cached_attention.hpp]
//   attention_forward(D, AttentionShape, scale, q, k, v, o, lse)       causal; lse may be null
//   attention_backward(D, AttentionShape, scale, q, k, v, o, lse, dout, dq, dk, dv, drow)   += each non-null
//   attention_backward_scratch(D, AttentionShape, dq_or_dk)            drow elements
//   append_heads(D, B, T, G, S, Dh, src, starts, cache)        src[B,T,G,Dh] -> cache[B,G,S,Dh] at starts[b] + t
//   append_rows(D, B, T, S, W, src, starts, cache)             src[B,T,W] -> cache[B,S,W] at starts[b] + t
//   cached_attention(D, CachedAttentionShape, scale, q, k_cache, v_cache, lengths, max_len, out)
//   absorb_query(D, B, T, H, N, Dr, Dv, Dc, q, kv_b, q_cat)    MLA: W_UK folded into the query
//   latent_cached_attention(D, B, H, T, S, Dc, Dr, scale, q_cat, cache, lengths, max_len, out)
//   absorb_output(D, B, T, H, N, Dv, Dc, o_lat, kv_b, out)     MLA: W_UV applied after
//     starts, lengths: int32 [B] in device memory; max_len: the largest length, a host value
// Quantized caches (CacheDtype bf16/int8; the CPU's alone, the rows as StoredRows)     [cpu/quantize.hpp,
//   store_row(D, out, row, x, W)   load_row(D, in, j, d, n, out)     one row in and out  cpu/cached_attention.hpp]
//   append_heads(D, B, T, G, S, Dh, src, starts, StoredRowsOut)   append_latent(D, B, T, S, Dc, Dr, src, starts, c, pe)
//   cached_attention(D, shape, scale, q, StoredRows k, StoredRows v, lengths, max_len, out)
//   latent_cached_attention(D, B, H, T, S, Dc, Dr, scale, q_cat, StoredRows cache, StoredRows rope, lengths, max_len, out)
// The optimizer                                                                       [optimizer.hpp]
//   adamw_update(D, AdamWStep, p, g, m, v, n, keep)             one AdamW step over n elements
//   sum_of_squares(D, x, n) -> host double                      the squared gradient norm
#pragma once

#define MLA_KERNELS_INCLUDED 1

#include "mla/backend/devices.hpp"
#include "mla/backend/types.hpp"

#include "mla/backend/cpu/attention.hpp"
#include "mla/backend/cpu/cached_attention.hpp"
#include "mla/backend/cpu/dropout.hpp"
#include "mla/backend/cpu/elementwise.hpp"
#include "mla/backend/cpu/embedding.hpp"
#include "mla/backend/cpu/gemm.hpp"
#include "mla/backend/cpu/layout.hpp"
#include "mla/backend/cpu/linear.hpp"
#include "mla/backend/cpu/norm.hpp"
#include "mla/backend/cpu/optimizer.hpp"
#include "mla/backend/cpu/parallel.hpp"
#include "mla/backend/cpu/rope.hpp"
#include "mla/backend/cpu/softmax.hpp"

#if defined(MLA_CUDA) || defined(__CUDACC__)
#include "mla/backend/cuda/kernels.hpp"
#endif
