// Fused CPU kernels of the neural-network layers (ctrgraph.layers.native).
//
// pooled_lookup_backward: the table gradient of a weighted sum over looked-up rows,
//   s[b] = sum_l w[b, l] T[ids[b, l]]   ->   dT[ids[b, l]] += w[b, l] * g[b]
// in the order b, l (row-major), each product rounded before it is added: the same operations as
// PyTorch's w[..., None] * g[:, None, :] followed by index_add_ into a zero table (bit for bit),
// without the [B, L, d] product. Compiled with -ffp-contract=off (no fused multiply-add).
//
// small_attention_forward / _backward: softmax(scale Q K^T) V per (row, head) for short field
// sequences (AutoInt's interacting layer), reading Q, K, V from the fused projection
// qkv [B, F, 3, H, dh] and writing the output as [B, F, H dh] (heads concatenated); the forward
// keeps the attention weights for the backward as P [B, H, F, F] with P[b, h, j, i] = alpha_{i,j}
// (transposed), and the backward writes dqkv in the layout of qkv.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <utility>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

#include "simd_exp.h"  // v16, v16i, exp_v16

// exp for the generic attention loops: simd_exp.h's exp_v16 on one lane (the same operations as
// the vectorised kernels, so both paths round alike)
inline float exp_poly(float x) { return exp_v16(v16{} + x)[0]; }
inline double exp_poly(double x) { return std::exp(x); }

#define CTRGRAPH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// pooled_lookup_backward's loop for float rows of 16 (each product w * g rounded, then added to the
// table row: lane-wise, so the vector form rounds every element as the scalar loop does)
CTRGRAPH_CLONES void pooled_bwd16(const float* gp, const int64_t* ip, const float* wp, float* op, int64_t B, int64_t L) {
  for (int64_t b = 0; b < B; ++b) {
    v16 gb;
    std::memcpy(&gb, gp + b * 16, sizeof(v16));
    for (int64_t l = 0; l < L; ++l) {
      float* orow = op + ip[b * L + l] * 16;
      v16 o;
      std::memcpy(&o, orow, sizeof(v16));
      o = o + wp[b * L + l] * gb;
      std::memcpy(orow, &o, sizeof(v16));
    }
  }
}

// rows[i] = T[ids[i]] for rows of 16 floats (one 64-byte copy each instead of a memcpy call)
template <typename I>
CTRGRAPH_CLONES void gather16(const float* tp, const I* ip, float* bp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    v16 r;
    std::memcpy(&r, tp + static_cast<int64_t>(ip[i]) * 16, sizeof(v16));
    std::memcpy(bp + i * 16, &r, sizeof(v16));
  }
}

torch::Tensor pooled_lookup_backward(torch::Tensor g, torch::Tensor ids, torch::Tensor w, int64_t rows,
                                     int64_t padding_idx) {
  TORCH_CHECK(g.dim() == 2 && ids.dim() == 2 && w.sizes() == ids.sizes() && g.size(0) == ids.size(0),
              "pooled_lookup_backward: g [B, d], ids [B, L], w [B, L] expected");
  TORCH_CHECK(ids.scalar_type() == torch::kLong, "pooled_lookup_backward: int64 ids expected");
  g = g.contiguous();
  ids = ids.contiguous();
  w = w.contiguous().to(g.scalar_type());
  const int64_t B = ids.size(0), L = ids.size(1), d = g.size(1);
  auto out = torch::zeros({rows, d}, g.options());
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * L; ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < rows, "pooled_lookup_backward: index ", ip[i], " out of range [0, ", rows, ")");
  if (g.scalar_type() == torch::kFloat && d == 16) {  // one 16-lane vector per row: the same operations
    pooled_bwd16(g.data_ptr<float>(), ip, w.data_ptr<float>(), out.data_ptr<float>(), B, L);
    if (padding_idx >= 0) out[padding_idx].zero_();
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pooled_lookup_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t* gb = gp + b * d;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t r = ip[b * L + l];
        const scalar_t wl = wp[b * L + l];
        scalar_t* orow = op + r * d;
        for (int64_t c = 0; c < d; ++c) {
          const scalar_t p = wl * gb[c];
          orow[c] = orow[c] + p;
        }
      }
    }
  });
  if (padding_idx >= 0) out[padding_idx].zero_();
  return out;
}

// The attention of rows b0..b1 for a head width DH known at compile time and at most 16 fields, on
// GCC vector types: a score column (all query rows i for one key j) is one 16-lane vector, a head
// row one DH-lane vector. The functions are
// compiled for AVX-512, AVX2 and the baseline, picked at load time (target_clones), so a cached build
// runs on any x86-64 CPU.
template <int DH>
struct HeadVec {
  typedef float type __attribute__((vector_size(DH * 4)));
};

// Vectorised over the query row i (lane i of a 16-lane vector, rows beyond F padded with zero Q and
// G, never stored): a score vector S[j] holds s_{i,j} for all i, so the softmax's max and sum over j
// are lane-wise operations in the order j = 0, 1, ... of the scalar loops (no horizontal reduction,
// no serial chain per row), every product and sum rounded as in the generic loops (bit for bit).
// P is stored transposed: P[b, h, j, i] = alpha_{i,j} (the backward reads it the same way).
template <int DH>
inline __attribute__((always_inline)) void attn16_fwd(const float* x, float* o, float* pp, int64_t b0, int64_t b1,
                                                       int64_t F, int64_t H, int64_t D, float sc) {
  const int64_t row = 3 * D;
  alignas(64) float QT[DH][16], OT[DH][16];
  std::memset(QT, 0, sizeof(QT));
  v16 S[16];
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * F * row;
    for (int64_t h = 0; h < H; ++h) {
      const float* q = xb + h * DH;
      const float* k = xb + D + h * DH;
      const float* v = xb + 2 * D + h * DH;
      for (int64_t i = 0; i < F; ++i)
        for (int c = 0; c < DH; ++c) QT[c][i] = q[i * row + c];
      v16 qt[DH];
      for (int c = 0; c < DH; ++c) std::memcpy(&qt[c], QT[c], sizeof(v16));
      // Eq. 5: s_{i,j} = <q_i, k_j> (scaled), the row max m_i
      v16 m;
      for (int64_t j = 0; j < F; ++j) {
        const float* kj = k + j * row;
        v16 s = v16{};
        for (int c = 0; c < DH; ++c) s += kj[c] * qt[c];
        s = s * sc + 0.0f;
        S[j] = s;
        m = j == 0 ? s : (m < s ? s : m);
      }
      // Eq. 6: alpha_{i,j} = exp(s_{i,j} - m_i) / sum_j exp(s_{i,j} - m_i)
      v16 sum = v16{};
      for (int64_t j = 0; j < F; ++j) {
        S[j] = exp_v16(S[j] - m);
        sum += S[j];
      }
      const v16 inv = 1.0f / sum;
      float* Pbh = pp + (b * H + h) * F * F;
      for (int64_t j = 0; j < F; ++j) {
        S[j] = S[j] * inv;
        std::memcpy(Pbh + j * F, &S[j], F * sizeof(float));
      }
      // Eq. 7: o_i = sum_j alpha_{i,j} v_j
      for (int c = 0; c < DH; ++c) {
        v16 acc = v16{};
        for (int64_t j = 0; j < F; ++j) acc += S[j] * v[j * row + c];
        std::memcpy(OT[c], &acc, sizeof(v16));
      }
      float* ob = o + b * F * D + h * DH;
      for (int64_t i = 0; i < F; ++i)
        for (int c = 0; c < DH; ++c) ob[i * D + c] = OT[c][i];
    }
  }
}

template <int DH>
inline __attribute__((always_inline)) void attn16_bwd(const float* x, const float* gp, const float* pp, float* dx,
                                                       int64_t b0, int64_t b1, int64_t F, int64_t H, int64_t D,
                                                       float sc) {
  typedef typename HeadVec<DH>::type vh;
  const int64_t row = 3 * D;
  alignas(64) float GT[DH][16], DQT[DH][16], PT[16][16], DST[16][16];
  std::memset(GT, 0, sizeof(GT));
  std::memset(PT, 0, sizeof(PT));
  vh QQ[16], GG[16];
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * F * row;
    float* dxb = dx + b * F * row;
    const float* gb = gp + b * F * D;
    for (int64_t h = 0; h < H; ++h) {
      const float* q = xb + h * DH;
      const float* k = xb + D + h * DH;
      const float* v = xb + 2 * D + h * DH;
      const float* Pbh = pp + (b * H + h) * F * F;
      for (int64_t i = 0; i < F; ++i) {
        std::memcpy(&QQ[i], q + i * row, sizeof(vh));
        std::memcpy(&GG[i], gb + i * D + h * DH, sizeof(vh));
        for (int c = 0; c < DH; ++c) GT[c][i] = gb[i * D + h * DH + c];
      }
      v16 gt[DH];
      for (int c = 0; c < DH; ++c) std::memcpy(&gt[c], GT[c], sizeof(v16));
      // dP_{i,j} = <g_i, v_j>; r_i = sum_j alpha_{i,j} dP_{i,j}; dS = alpha (dP - r) scale
      v16 Pj[16], dP[16];
      v16 r = v16{};
      for (int64_t j = 0; j < F; ++j) {
        std::memcpy(PT[j], Pbh + j * F, F * sizeof(float));
        std::memcpy(&Pj[j], PT[j], sizeof(v16));
        const float* vj = v + j * row;
        v16 d = v16{};
        for (int c = 0; c < DH; ++c) d += vj[c] * gt[c];
        dP[j] = d;
        r += Pj[j] * d;
      }
      for (int64_t j = 0; j < F; ++j) {
        const v16 ds = Pj[j] * (dP[j] - r) * sc;
        std::memcpy(DST[j], &ds, sizeof(v16));
      }
      // dq_i = sum_j dS_{i,j} k_j
      for (int c = 0; c < DH; ++c) {
        v16 acc = v16{};
        for (int64_t j = 0; j < F; ++j) {
          v16 ds;
          std::memcpy(&ds, DST[j], sizeof(v16));
          acc += ds * k[j * row + c];
        }
        std::memcpy(DQT[c], &acc, sizeof(v16));
      }
      for (int64_t i = 0; i < F; ++i)
        for (int c = 0; c < DH; ++c) dxb[i * row + h * DH + c] = DQT[c][i];
      // dk_j = sum_i dS_{i,j} q_i; dv_j = sum_i alpha_{i,j} g_i
      for (int64_t j = 0; j < F; ++j) {
        vh dk = vh{}, dv = vh{};
        for (int64_t i = 0; i < F; ++i) {
          dk += DST[j][i] * QQ[i];
          dv += PT[j][i] * GG[i];
        }
        std::memcpy(dxb + j * row + D + h * DH, &dk, sizeof(vh));
        std::memcpy(dxb + j * row + 2 * D + h * DH, &dv, sizeof(vh));
      }
    }
  }
}

#define CTRGRAPH_ATTN(DH)                                                                                       \
  CTRGRAPH_CLONES void attn16_fwd_##DH(const float* x, float* o, float* pp, int64_t b0, int64_t b1, int64_t F,  \
                                       int64_t H, int64_t D, float sc) {                                        \
    attn16_fwd<DH>(x, o, pp, b0, b1, F, H, D, sc);                                                              \
  }                                                                                                             \
  CTRGRAPH_CLONES void attn16_bwd_##DH(const float* x, const float* gp, const float* pp, float* dx, int64_t b0,  \
                                       int64_t b1, int64_t F, int64_t H, int64_t D, float sc) {                 \
    attn16_bwd<DH>(x, gp, pp, dx, b0, b1, F, H, D, sc);                                                         \
  }
CTRGRAPH_ATTN(4)
CTRGRAPH_ATTN(8)
CTRGRAPH_ATTN(16)
CTRGRAPH_ATTN(32)

using FwdFn = void (*)(const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, float);
using BwdFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                       int64_t, float);

// the specialised float kernels for (head width, field count), or nulls (generic loops)
std::pair<FwdFn, BwdFn> specialised(int64_t dh, int64_t F) {
  if (F > 16) return {nullptr, nullptr};
  switch (dh) {
    case 4: return {&attn16_fwd_4, &attn16_bwd_4};
    case 8: return {&attn16_fwd_8, &attn16_bwd_8};
    case 16: return {&attn16_fwd_16, &attn16_bwd_16};
    case 32: return {&attn16_fwd_32, &attn16_bwd_32};
    default: return {nullptr, nullptr};
  }
}

// One step of torch.optim.Adam's single-tensor path (no amsgrad, maximize or weight decay) on float32
// CPU tensors, bit for bit: every element rounded as ATen's kernels of that path round it, in their
// order. exp_avg.lerp_(g, 1 - beta1) is ATen's vectorised lerp, fma(w, g - m, m) for |w| < 0.5 and
// fma(w - 1, g - m, g) otherwise (its scalar tail rounds alike); exp_avg_sq.mul_(beta2) then
// addcmul_(g, g, 1 - beta2) is fma((1 - beta2) g, g, beta2 v); the square root is torch's own
// (at::sqrt, not correctly rounded everywhere), into a reused buffer; then
// p + (-step_size m) / (sqrt(v) / bc2 + eps) as addcdiv_. The scalars are the optimizer's Python
// doubles (same libm pow), cast to float where ATen casts them. Each state step is incremented here.
CTRGRAPH_CLONES void adam_moments(const float* g, float* m, float* v, int64_t n, float w, float b2, float omb2) {
  const bool small = std::fabs(w) < 0.5f;
  const float c = small ? w : w - 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i], mi = m[i];
    m[i] = std::fma(c, gi - mi, small ? mi : gi);
    v[i] = std::fma(omb2 * gi, gi, v[i] * b2);
  }
}

CTRGRAPH_CLONES void adam_params(float* p, const float* m, const float* s, int64_t n, float bc2s, float eps,
                                 float nss) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] + (nss * m[i]) / (s[i] / bc2s + eps);
}

void adam_step(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads,
               std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs,
               std::vector<torch::Tensor> steps, double lr, double beta1, double beta2, double eps) {
  const size_t k = params.size();
  TORCH_CHECK(grads.size() == k && exp_avgs.size() == k && exp_avg_sqs.size() == k && steps.size() == k,
              "adam_step: lists of one length expected");
  int64_t most = 0;
  for (size_t i = 0; i < k; ++i) {
    for (const auto* t : {&params[i], &grads[i], &exp_avgs[i], &exp_avg_sqs[i]})
      TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu() && t->is_contiguous() &&
                  t->numel() == params[i].numel(), "adam_step: contiguous float32 CPU tensors of one size expected");
    TORCH_CHECK(steps[i].scalar_type() == torch::kFloat && steps[i].numel() == 1 && steps[i].device().is_cpu(),
                "adam_step: float32 CPU steps expected");
    most = std::max(most, params[i].numel());
  }
  auto buf = torch::empty({most}, torch::dtype(torch::kFloat));
  const float w = static_cast<float>(1.0 - beta1), b2 = static_cast<float>(beta2);
  const float omb2 = static_cast<float>(1.0 - beta2), fe = static_cast<float>(eps);
  constexpr int64_t grain = 32768;
  for (size_t i = 0; i < k; ++i) {
    float* st = steps[i].data_ptr<float>();
    *st = *st + 1.0f;
    const double step = *st;
    const float nss = static_cast<float>(-(lr / (1.0 - std::pow(beta1, step))));
    const float bc2s = static_cast<float>(std::pow(1.0 - std::pow(beta2, step), 0.5));
    const int64_t n = params[i].numel();
    float* p = params[i].data_ptr<float>();
    const float* g = grads[i].data_ptr<float>();
    float* m = exp_avgs[i].data_ptr<float>();
    float* v = exp_avg_sqs[i].data_ptr<float>();
    at::parallel_for(0, n, grain, [&](int64_t a, int64_t b) { adam_moments(g + a, m + a, v + a, b - a, w, b2, omb2); });
    auto sq = buf.narrow(0, 0, n);
    at::sqrt_out(sq, exp_avg_sqs[i].view({n}));
    const float* s = sq.data_ptr<float>();
    at::parallel_for(0, n, grain, [&](int64_t a, int64_t b) { adam_params(p + a, m + a, s + a, b - a, bc2s, fe, nss); });
  }
}

// DCN-V2's cross layer x' = x0 * h + x (h = W x + b from torch's addmm), each product rounded before
// the sum as torch's (x0 * h).add_(x): one pass instead of two.
CTRGRAPH_CLONES void cross_fwd(const float* x0, const float* h, const float* x, float* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = x0[i] * h[i] + x[i];
}

torch::Tensor cross_layer_forward(torch::Tensor x0, torch::Tensor h, torch::Tensor x) {
  TORCH_CHECK(x0.scalar_type() == torch::kFloat && x0.is_contiguous() && h.is_contiguous() && x.is_contiguous() &&
              h.sizes() == x0.sizes() && x.sizes() == x0.sizes() && h.scalar_type() == torch::kFloat &&
              x.scalar_type() == torch::kFloat, "cross_layer_forward: contiguous float32 tensors of one shape expected");
  auto out = torch::empty_like(x0);
  const float *a = x0.data_ptr<float>(), *b = h.data_ptr<float>(), *c = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, x0.numel(), 32768, [&](int64_t i0, int64_t i1) { cross_fwd(a + i0, b + i0, c + i0, o + i0, i1 - i0); });
  return out;
}

// The elementwise part of one cross layer's backward, in autograd's order: the gradient of the
// layer's output g = gp + gx (gp: the gradient reaching the output itself, gx: the next layer's
// gh W, or none), written to go unless go is null (the caller then needs no g: the first layer, or
// g = gp kept as it is); gh = g * x0 (the gradient of h); the gradient of x0 accumulated as
// autograd's input buffer sums it: acc <- acc_in + g * h, and for the first layer (x = x0: its
// residual reaches x0 before its product) acc <- (acc_in + g) + g * h; no acc_in: nothing summed
// yet (the first term is stored as is). go may alias gp, acc may alias acc_in. One row of D values;
// gp's rows may lie further apart (a column block of the model's concatenation, read in place).
CTRGRAPH_CLONES void cross_bwd(const float* gp, const float* gx, float* go, const float* h, const float* x0,
                               float* gh, const float* acc_in, float* acc, int64_t n, bool first) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gx ? gp[i] + gx[i] : gp[i];
    if (go) go[i] = g;
    gh[i] = g * x0[i];
    const float a = g * h[i];
    if (first) acc[i] = (acc_in ? acc_in[i] + g : g) + a;
    else acc[i] = acc_in ? acc_in[i] + a : a;
  }
}

void cross_layer_backward(torch::Tensor gp, c10::optional<torch::Tensor> gx, c10::optional<torch::Tensor> g,
                          torch::Tensor h, torch::Tensor x0, torch::Tensor gh, c10::optional<torch::Tensor> acc_in,
                          torch::Tensor acc, bool first) {
  for (const auto* t : {&h, &x0, &gh, &acc})
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->is_contiguous() && t->sizes() == x0.sizes(),
                "cross_layer_backward: contiguous float32 tensors of one shape expected");
  for (const auto* t : {&gx, &g, &acc_in})
    TORCH_CHECK(!t->has_value() || ((*t)->scalar_type() == torch::kFloat && (*t)->is_contiguous() &&
                                    (*t)->sizes() == x0.sizes()), "cross_layer_backward: bad optional tensor");
  TORCH_CHECK(x0.dim() == 2 && gp.dim() == 2 && gp.sizes() == x0.sizes() && gp.scalar_type() == torch::kFloat &&
              gp.stride(1) == 1 && gp.stride(0) >= x0.size(1),
              "cross_layer_backward: float32 gp [B, D] with contiguous rows expected");
  const int64_t R = x0.size(0), D = x0.size(1), gps = gp.stride(0);
  const float* gpp = gp.data_ptr<float>();
  const float* gxp = gx ? gx->data_ptr<float>() : nullptr;
  const float *hp = h.data_ptr<float>(), *xp = x0.data_ptr<float>();
  const float* ain = acc_in ? acc_in->data_ptr<float>() : nullptr;
  float *gop = g ? g->data_ptr<float>() : nullptr, *ghp = gh.data_ptr<float>(), *ap = acc.data_ptr<float>();
  at::parallel_for(0, R, std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    if (gps == D) {  // contiguous: one pass over the rows' block
      const int64_t i0 = r0 * D;
      cross_bwd(gpp + i0, gxp ? gxp + i0 : nullptr, gop ? gop + i0 : nullptr, hp + i0, xp + i0, ghp + i0,
                ain ? ain + i0 : nullptr, ap + i0, (r1 - r0) * D, first);
      return;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i0 = r * D;
      cross_bwd(gpp + r * gps, gxp ? gxp + i0 : nullptr, gop ? gop + i0 : nullptr, hp + i0, xp + i0, ghp + i0,
                ain ? ain + i0 : nullptr, ap + i0, D, first);
    }
  });
}

// DIEN's AUGRU recurrence (ctrgraph.layers.recurrent._attentional_loop, kind augru, last state only)
// over gx [B, L, 3H] (W i_t + b: gates u, r, h~), w [H, 3H] (U transposed) and a [B, L, 1]:
//   P = h w;  [u, r] = sigmoid(gx_u,r + P_u,r);  h~ = tanh(gx_h + r * P_h);  h' = h + (a u) (h~ - h)
// with torch's mm, sigmoid and tanh (and in the backward its mm, sum, tanh_backward and
// sigmoid_backward) and the arithmetic between them in native loops, each operation rounded as the
// PyTorch loop's (no contraction). The forward keeps the states hs [L + 1, B, H], the gates S
// [L, B, 2H], h~ [L, B, H], P_h [L, B, H] and a u [L, B, H] for the backward.
std::vector<torch::Tensor> augru_forward(torch::Tensor gx, torch::Tensor w, torch::Tensor a) {
  TORCH_CHECK(gx.dim() == 3 && gx.scalar_type() == torch::kFloat && w.scalar_type() == torch::kFloat &&
              a.scalar_type() == torch::kFloat && w.dim() == 2 && gx.size(2) == 3 * w.size(0) &&
              w.size(1) == 3 * w.size(0) && a.dim() == 3 && a.size(0) == gx.size(0) && a.size(1) == gx.size(1) &&
              a.size(2) == 1, "augru_forward: float32 gx [B, L, 3H], w [H, 3H], a [B, L, 1] expected");
  gx = gx.contiguous();
  a = a.contiguous();
  const int64_t B = gx.size(0), L = gx.size(1), H = w.size(0), H3 = 3 * H;
  auto hs = torch::zeros({L + 1, B, H}, gx.options());
  auto S = torch::empty({L, B, 2 * H}, gx.options()), C = torch::empty({L, B, H}, gx.options());
  auto GN = torch::empty({L, B, H}, gx.options()), UA = torch::empty({L, B, H}, gx.options());
  const float *gp = gx.data_ptr<float>(), *ap = a.data_ptr<float>();
  for (int64_t t = 0; t < L; ++t) {
    auto h = hs[t];
    auto P = at::mm(h, w);
    const float* pp = P.data_ptr<float>();
    float *sp = S[t].data_ptr<float>(), *cp = C[t].data_ptr<float>(), *np = GN[t].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const float *g = gp + (b * L + t) * H3, *pb = pp + b * H3;
      float* sb = sp + b * 2 * H;
      for (int64_t j = 0; j < 2 * H; ++j) sb[j] = g[j] + pb[j];
    }
    S[t].sigmoid_();
    for (int64_t b = 0; b < B; ++b) {
      const float *g = gp + (b * L + t) * H3 + 2 * H, *pb = pp + b * H3 + 2 * H, *r = sp + b * 2 * H + H;
      float *cb = cp + b * H, *nb = np + b * H;
      for (int64_t k = 0; k < H; ++k) {
        nb[k] = pb[k];
        cb[k] = g[k] + r[k] * pb[k];
      }
    }
    C[t].tanh_();
    const float* hp = h.data_ptr<float>();
    float *up = UA[t].data_ptr<float>(), *op = hs[t + 1].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const float at = ap[b * L + t];
      for (int64_t k = 0; k < H; ++k) {
        const int64_t i = b * H + k;
        const float ua = at * sp[b * 2 * H + k];
        up[i] = ua;
        op[i] = hp[i] + ua * (cp[i] - hp[i]);
      }
    }
  }
  return {hs, S, C, GN, UA};
}

// The gradients (gx [B, L, 3H], w [H, 3H], a [B, L, 1]) of augru_forward's last state, summed in
// autograd's order for the PyTorch loop: h's gradient (g_h' - g_h' a u) + (g_P w^T); w's gradient
// the steps' (g_P^T h)^T from the last step to the first.
std::vector<torch::Tensor> augru_backward(torch::Tensor gH, torch::Tensor w, torch::Tensor a, torch::Tensor hs,
                                          torch::Tensor S, torch::Tensor C, torch::Tensor GN, torch::Tensor UA) {
  a = a.contiguous();
  const int64_t L = C.size(0), B = C.size(1), H = C.size(2), H3 = 3 * H;
  auto opts = C.options();
  auto ggx = torch::empty({B, L, H3}, opts), ga = torch::empty({B, L, 1}, opts);
  auto g = gH.contiguous().clone(), ghp = torch::empty({B, H}, opts), gdiff = torch::empty({B, H}, opts);
  auto pu = torch::empty({B, H}, opts), gn = torch::empty({B, H}, opts), gS = torch::empty({B, 2 * H}, opts);
  auto gpre = torch::empty({B, 2 * H}, opts), gP = torch::empty({B, H3}, opts), gat = torch::empty({B, 1}, opts);
  auto wt = w.t();
  torch::Tensor gw;
  const float* ap = a.data_ptr<float>();
  float *ggp = ggx.data_ptr<float>(), *gap = ga.data_ptr<float>(), *gg = g.data_ptr<float>();
  float *ghpp = ghp.data_ptr<float>(), *gdp = gdiff.data_ptr<float>(), *pup = pu.data_ptr<float>();
  float *gnp = gn.data_ptr<float>(), *gsp = gS.data_ptr<float>(), *gprep = gpre.data_ptr<float>();
  float *gPp = gP.data_ptr<float>(), *gatp = gat.data_ptr<float>();
  for (int64_t t = L - 1; t >= 0; --t) {
    auto h = hs[t];
    const float *hp = h.data_ptr<float>(), *sp = S[t].data_ptr<float>(), *cp = C[t].data_ptr<float>();
    const float *np = GN[t].data_ptr<float>(), *up = UA[t].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const float at = ap[b * L + t];
      for (int64_t k = 0; k < H; ++k) {
        const int64_t i = b * H + k;
        const float gua = gg[i] * (cp[i] - hp[i]);
        const float gd = gg[i] * up[i];
        gdp[i] = gd;
        ghpp[i] = gg[i] + (-gd);
        pup[i] = gua * sp[b * 2 * H + k];
        gsp[b * 2 * H + k] = gua * at;
      }
    }
    at::sum_out(gat, pu, {1}, true);
    for (int64_t b = 0; b < B; ++b) gap[b * L + t] = gatp[b];
    at::tanh_backward_out(gn, gdiff, C[t]);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < H; ++k) {
        const int64_t i = b * H + k;
        gsp[b * 2 * H + H + k] = gnp[i] * np[i];
        gPp[b * H3 + 2 * H + k] = gnp[i] * sp[b * 2 * H + H + k];
        ggp[(b * L + t) * H3 + 2 * H + k] = gnp[i];
      }
    at::sigmoid_backward_out(gpre, gS, S[t]);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < 2 * H; ++j) {
        const float v = gprep[b * 2 * H + j];
        gPp[b * H3 + j] = v;
        ggp[(b * L + t) * H3 + j] = v;
      }
    auto dw = gP.t().mm(h).t();
    gw = gw.defined() ? gw + dw : dw;
    if (t > 0) {
      auto gm = gP.mm(wt);
      const float* gmp = gm.data_ptr<float>();
      for (int64_t i = 0; i < B * H; ++i) gg[i] = ghpp[i] + gmp[i];
    }
  }
  return {ggx, gw, ga};
}

// s[b] = sum_l w[b, l] T[ids[b, l]] through torch.bmm on chunks of `chunk` rows whose looked-up
// rows are gathered into one reused buffer (L2-resident): the values of bmm(w [B, 1, L], T[ids]) bit
// for bit (bmm computes every batch entry on its own), without the [B, L, d] gather.
torch::Tensor pooled_lookup_forward(torch::Tensor weight, torch::Tensor ids, torch::Tensor w, int64_t chunk) {
  TORCH_CHECK(weight.dim() == 2 && ids.dim() == 2 && w.sizes() == ids.sizes(),
              "pooled_lookup_forward: weight [V, d], ids [B, L], w [B, L] expected");
  TORCH_CHECK(ids.scalar_type() == torch::kLong && w.scalar_type() == weight.scalar_type(),
              "pooled_lookup_forward: int64 ids and w of the table's dtype expected");
  weight = weight.contiguous();
  ids = ids.contiguous();
  w = w.contiguous();
  const int64_t B = ids.size(0), L = ids.size(1), d = weight.size(1), V = weight.size(0);
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * L; ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < V, "pooled_lookup_forward: index ", ip[i], " out of range [0, ", V, ")");
  auto out = torch::empty({B, 1, d}, weight.options());
  if (B == 0) return out.view({B, d});
  chunk = std::max<int64_t>(1, std::min(chunk, B));
  auto buf = torch::empty({chunk, L, d}, weight.options());
  const int64_t row_bytes = d * weight.element_size();
  const char* tp = static_cast<const char*>(weight.data_ptr());
  char* bp = static_cast<char*>(buf.data_ptr());
  auto w3 = w.view({B, 1, L});
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t c = std::min(chunk, B - b0);
    if (d == 16 && weight.scalar_type() == torch::kFloat)
      gather16(reinterpret_cast<const float*>(tp), ip + b0 * L, reinterpret_cast<float*>(bp), c * L);
    else
      for (int64_t i = 0; i < c * L; ++i) std::memcpy(bp + i * row_bytes, tp + ip[b0 * L + i] * row_bytes, row_bytes);
    auto o = out.narrow(0, b0, c);
    at::bmm_out(o, w3.narrow(0, b0, c), buf.narrow(0, 0, c));
  }
  return out.view({B, d});
}

std::vector<torch::Tensor> small_attention_forward(torch::Tensor qkv, int64_t H, double scale) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) % (3 * H) == 0, "small_attention_forward: qkv [B, F, 3 H dh] expected");
  qkv = qkv.contiguous();
  const int64_t B = qkv.size(0), F = qkv.size(1), D = qkv.size(2) / 3, dh = D / H, row = 3 * D;
  auto out = torch::empty({B, F, D}, qkv.options());
  auto P = torch::empty({B, H, F, F}, qkv.options());
  const auto fast = specialised(dh, F);
  if (qkv.scalar_type() == torch::kFloat && fast.first != nullptr) {
    const float* x = qkv.data_ptr<float>();
    float* o = out.data_ptr<float>();
    float* pp = P.data_ptr<float>();
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      fast.first(x, o, pp, b0, b1, F, H, D, static_cast<float>(scale));
    });
    return {out, P};
  }
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "small_attention_forward", [&] {
    const scalar_t* x = qkv.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* pp = P.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> kT(dh * F), s(F), acc(dh);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* xb = x + b * F * row;
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t* q = xb + h * dh;
          const scalar_t* k = xb + D + h * dh;
          const scalar_t* v = xb + 2 * D + h * dh;
          for (int64_t j = 0; j < F; ++j)
            for (int64_t c = 0; c < dh; ++c) kT[c * F + j] = k[j * row + c];
          scalar_t* Pbh = pp + (b * H + h) * F * F;
          for (int64_t i = 0; i < F; ++i) {
            std::fill(s.begin(), s.end(), scalar_t(0));
            for (int64_t c = 0; c < dh; ++c) {
              const scalar_t qc = q[i * row + c];
              const scalar_t* kc = kT.data() + c * F;
              for (int64_t j = 0; j < F; ++j) s[j] += qc * kc[j];
            }
            scalar_t m = s[0] * sc;
            for (int64_t j = 0; j < F; ++j) { s[j] *= sc; m = std::max(m, s[j]); }
            scalar_t sum = 0;
            for (int64_t j = 0; j < F; ++j) s[j] = exp_poly(s[j] - m);
            for (int64_t j = 0; j < F; ++j) sum += s[j];
            const scalar_t inv = scalar_t(1) / sum;
            for (int64_t j = 0; j < F; ++j) {
              s[j] = s[j] * inv;
              Pbh[j * F + i] = s[j];  // P[b, h, j, i] (transposed, as the vectorised kernels)
            }
            const scalar_t* Pi = s.data();
            std::fill(acc.begin(), acc.end(), scalar_t(0));
            for (int64_t j = 0; j < F; ++j) {
              const scalar_t p = Pi[j];
              const scalar_t* vj = v + j * row;
              for (int64_t c = 0; c < dh; ++c) acc[c] += p * vj[c];
            }
            scalar_t* oi = o + (b * F + i) * D + h * dh;
            for (int64_t c = 0; c < dh; ++c) oi[c] = acc[c];
          }
        }
      }
    });
  });
  return {out, P};
}

torch::Tensor small_attention_backward(torch::Tensor g, torch::Tensor qkv, torch::Tensor P, double scale) {
  g = g.contiguous();
  qkv = qkv.contiguous();
  P = P.contiguous();
  const int64_t B = qkv.size(0), F = qkv.size(1), D = qkv.size(2) / 3, H = P.size(1), dh = D / H, row = 3 * D;
  TORCH_CHECK(g.sizes() == torch::IntArrayRef({B, F, D}), "small_attention_backward: g [B, F, H dh] expected");
  auto dqkv = torch::empty_like(qkv);
  const auto fast = specialised(dh, F);
  if (qkv.scalar_type() == torch::kFloat && fast.second != nullptr) {
    const float* x = qkv.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    const float* pp = P.data_ptr<float>();
    float* dx = dqkv.data_ptr<float>();
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      fast.second(x, gp, pp, dx, b0, b1, F, H, D, static_cast<float>(scale));
    });
    return dqkv;
  }
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "small_attention_backward", [&] {
    const scalar_t* x = qkv.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* pp = P.data_ptr<scalar_t>();
    scalar_t* dx = dqkv.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> vT(dh * F), dS(F * F), dq(dh), pcol(F);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* xb = x + b * F * row;
        scalar_t* dxb = dx + b * F * row;
        const scalar_t* gb = gp + b * F * D;
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t* q = xb + h * dh;
          const scalar_t* k = xb + D + h * dh;
          const scalar_t* v = xb + 2 * D + h * dh;
          scalar_t* dQ = dxb + h * dh;
          scalar_t* dK = dxb + D + h * dh;
          scalar_t* dV = dxb + 2 * D + h * dh;
          const scalar_t* Pbh = pp + (b * H + h) * F * F;
          const scalar_t* gh = gb + h * dh;
          for (int64_t j = 0; j < F; ++j)
            for (int64_t c = 0; c < dh; ++c) {
              vT[c * F + j] = v[j * row + c];
              dK[j * row + c] = 0;
              dV[j * row + c] = 0;
            }
          for (int64_t i = 0; i < F; ++i) {
            for (int64_t j = 0; j < F; ++j) pcol[j] = Pbh[j * F + i];
            const scalar_t* Pi = pcol.data();
            const scalar_t* gi = gh + i * D;
            scalar_t* dSi = dS.data() + i * F;
            // dV[j] += P[i, j] g[i]; dP[i, j] = <g[i], v[j]>
            for (int64_t j = 0; j < F; ++j) {
              const scalar_t p = Pi[j];
              scalar_t* dVj = dV + j * row;
              for (int64_t c = 0; c < dh; ++c) dVj[c] += p * gi[c];
            }
            std::fill(dSi, dSi + F, scalar_t(0));
            for (int64_t c = 0; c < dh; ++c) {
              const scalar_t gc = gi[c];
              const scalar_t* vc = vT.data() + c * F;
              for (int64_t j = 0; j < F; ++j) dSi[j] += gc * vc[j];
            }
            scalar_t r = 0;
            for (int64_t j = 0; j < F; ++j) r += Pi[j] * dSi[j];
            for (int64_t j = 0; j < F; ++j) dSi[j] = Pi[j] * (dSi[j] - r) * sc;
            // dQ[i] = sum_j dS[i, j] k[j]; dK[j] += dS[i, j] q[i]
            std::fill(dq.begin(), dq.end(), scalar_t(0));
            const scalar_t* qi = q + i * row;
            for (int64_t j = 0; j < F; ++j) {
              const scalar_t s = dSi[j];
              const scalar_t* kj = k + j * row;
              scalar_t* dKj = dK + j * row;
              for (int64_t c = 0; c < dh; ++c) {
                dq[c] += s * kj[c];
                dKj[c] += s * qi[c];
              }
            }
            for (int64_t c = 0; c < dh; ++c) dQ[i * row + c] = dq[c];
          }
        }
      }
    });
  });
  return dqkv;
}

}  // namespace

// AFM's attention over pairwise interactions (ctrgraph.layers.cross.PairwiseAttention), the
// elementwise parts around torch's own matmuls, softmax and bmm (ctrgraph.layers.native.pair_attention):
// pair_products: P[b, p] = E[b, i_p] * E[b, j_p] for the pairs i < j in row-major order, [B, F, d] ->
//   [B, P, d] (one pass for index_select, index_select, mul);
// pair_relu_backward: gH = H <= 0 ? 0 : gs * h (the score projection's K = 1 product gs h^T, then
//   threshold_backward on the ReLU's result H [B P, t]);
// pair_products_backward: gP = gW + a g (the two gradients of P, the attention's [B P, d] matmul and the
//   weighted sum's outer product a_bp g_b) and the gradient of E as the two index_selects' backward
//   sums it: per field f, A_f = 0 + sum over the pairs (f, j) of gP * E_j and B_f = 0 + sum over the
//   pairs (i, f) of gP * E_i, each in the pairs' order (index_add_'s), then A_f + B_f.
// Each product is rounded before it is added (-ffp-contract=off), as the PyTorch operations do.
// D: the embedding size as a compile-time constant (0: the run-time d), so that d = 16 is one vector
template <int64_t D>
inline __attribute__((always_inline)) void pair_prod_rows_t(const float* __restrict__ E, float* __restrict__ P,
                                                            int64_t b0, int64_t b1, int64_t F, int64_t dd) {
  const int64_t d = D ? D : dd, np = F * (F - 1) / 2;
  for (int64_t b = b0; b < b1; ++b) {
    const float* __restrict__ e = E + b * F * d;
    float* __restrict__ o = P + b * np * d;
    for (int64_t i = 0; i < F; ++i)
      for (int64_t j = i + 1; j < F; ++j, o += d)
        for (int64_t k = 0; k < d; ++k) o[k] = e[i * d + k] * e[j * d + k];
  }
}

CTRGRAPH_CLONES void pair_prod_rows(const float* E, float* P, int64_t b0, int64_t b1, int64_t F, int64_t d) {
  if (d == 16) pair_prod_rows_t<16>(E, P, b0, b1, F, d);
  else pair_prod_rows_t<0>(E, P, b0, b1, F, d);
}

torch::Tensor pair_products(torch::Tensor E) {
  TORCH_CHECK(E.dim() == 3 && E.scalar_type() == torch::kFloat && E.is_contiguous(),
              "pair_products: contiguous float32 [B, F, d] expected");
  const int64_t B = E.size(0), F = E.size(1), d = E.size(2);
  auto P = torch::empty({B, F * (F - 1) / 2, d}, E.options());
  const float* e = E.data_ptr<float>();
  float* o = P.data_ptr<float>();
  at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) { pair_prod_rows(e, o, b0, b1, F, d); });
  return P;
}

template <int64_t T>
inline __attribute__((always_inline)) void pair_relu_bwd_t(const float* __restrict__ gs, const float* __restrict__ h,
                                                           const float* __restrict__ H, float* __restrict__ gH,
                                                           int64_t r0, int64_t r1, int64_t tt) {
  const int64_t t = T ? T : tt;
  if (T == 16) {  // a vector select: the element-wise form compiles to a branch per element
    v16 hv;
    std::memcpy(&hv, h, sizeof(v16));
    for (int64_t r = r0; r < r1; ++r) {
      v16 x, o;
      std::memcpy(&x, H + r * 16, sizeof(v16));
      const v16 v = gs[r] * hv;
      o = x <= 0.0f ? v16{} : v;
      std::memcpy(gH + r * 16, &o, sizeof(v16));
    }
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float s = gs[r];
    const float* __restrict__ x = H + r * t;
    float* __restrict__ o = gH + r * t;
    for (int64_t k = 0; k < t; ++k) o[k] = x[k] <= 0.0f ? 0.0f : s * h[k];
  }
}

CTRGRAPH_CLONES void pair_relu_bwd(const float* gs, const float* h, const float* H, float* gH, int64_t r0, int64_t r1,
                                   int64_t t) {
  if (t == 16) pair_relu_bwd_t<16>(gs, h, H, gH, r0, r1, t);
  else pair_relu_bwd_t<0>(gs, h, H, gH, r0, r1, t);
}

torch::Tensor pair_relu_backward(torch::Tensor gs, torch::Tensor h, torch::Tensor H) {
  TORCH_CHECK(H.dim() == 2 && gs.numel() == H.size(0) && h.numel() == H.size(1) && H.is_contiguous() &&
              gs.is_contiguous() && h.is_contiguous() && H.scalar_type() == torch::kFloat &&
              gs.scalar_type() == torch::kFloat && h.scalar_type() == torch::kFloat,
              "pair_relu_backward: contiguous float32 gs [R], h [t], H [R, t] expected");
  const int64_t R = H.size(0), t = H.size(1);
  auto gH = torch::empty_like(H);
  const float *a = gs.data_ptr<float>(), *w = h.data_ptr<float>(), *x = H.data_ptr<float>();
  float* o = gH.data_ptr<float>();
  at::parallel_for(0, R, 2048, [&](int64_t r0, int64_t r1) { pair_relu_bwd(a, w, x, o, r0, r1, t); });
  return gH;
}

template <int64_t D>
inline __attribute__((always_inline)) void pair_prod_bwd_t(const float* __restrict__ gW, const float* __restrict__ a,
                                                           const float* __restrict__ g, const float* __restrict__ E,
                                                           float* __restrict__ gE, float* __restrict__ acc,
                                                           int64_t b0, int64_t b1, int64_t F, int64_t dd) {
  const int64_t d = D ? D : dd, np = F * (F - 1) / 2;
  float* __restrict__ A = acc;           // [F, d]: the first index_select's gradient
  float* __restrict__ Bs = acc + F * d;  // [F, d]: the second's
  for (int64_t b = b0; b < b1; ++b) {
    const float* __restrict__ e = E + b * F * d;
    const float* __restrict__ gb = g + b * d;
    const float* __restrict__ ab = a + b * np;
    const float* __restrict__ gw = gW + b * np * d;
    for (int64_t k = 0; k < 2 * F * d; ++k) acc[k] = 0.0f;
    int64_t p = 0;
    for (int64_t i = 0; i < F; ++i) {
      const float* __restrict__ ei = e + i * d;
      float* __restrict__ Ai = A + i * d;
      for (int64_t j = i + 1; j < F; ++j, ++p) {
        const float w = ab[p];
        const float* __restrict__ x = gw + p * d;
        float* __restrict__ Bj = Bs + j * d;
        const float* __restrict__ ej = e + j * d;
        for (int64_t k = 0; k < d; ++k) {
          const float gp = x[k] + w * gb[k];
          Ai[k] = Ai[k] + gp * ej[k];
          Bj[k] = Bj[k] + gp * ei[k];
        }
      }
    }
    float* __restrict__ o = gE + b * F * d;
    for (int64_t k = 0; k < F * d; ++k) o[k] = A[k] + Bs[k];
  }
}

CTRGRAPH_CLONES void pair_prod_bwd(const float* gW, const float* a, const float* g, const float* E, float* gE,
                                   float* acc, int64_t b0, int64_t b1, int64_t F, int64_t d) {
  if (d == 16) pair_prod_bwd_t<16>(gW, a, g, E, gE, acc, b0, b1, F, d);
  else pair_prod_bwd_t<0>(gW, a, g, E, gE, acc, b0, b1, F, d);
}

torch::Tensor pair_products_backward(torch::Tensor gW, torch::Tensor a, torch::Tensor g, torch::Tensor E) {
  TORCH_CHECK(E.dim() == 3 && E.scalar_type() == torch::kFloat && E.is_contiguous(),
              "pair_products_backward: contiguous float32 E [B, F, d] expected");
  const int64_t B = E.size(0), F = E.size(1), d = E.size(2), np = F * (F - 1) / 2;
  TORCH_CHECK(gW.numel() == B * np * d && a.numel() == B * np && g.numel() == B * d && gW.is_contiguous() &&
              a.is_contiguous() && g.is_contiguous() && gW.scalar_type() == torch::kFloat &&
              a.scalar_type() == torch::kFloat && g.scalar_type() == torch::kFloat,
              "pair_products_backward: contiguous float32 gW [B, P, d], a [B, P], g [B, d] expected");
  auto gE = torch::empty_like(E);
  const float *x = gW.data_ptr<float>(), *w = a.data_ptr<float>(), *gg = g.data_ptr<float>(), *e = E.data_ptr<float>();
  float* o = gE.data_ptr<float>();
  at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
    std::vector<float> acc(2 * F * d);
    pair_prod_bwd(x, w, gg, e, o, acc.data(), b0, b1, F, d);
  });
  return gE;
}

// Single-valued fields' lookups as one call (ctrgraph.layers.native.field_lookups): the rows
// weights[f][ids[f]] [B, d] of every field f (index_select's values: copies), from int32 or int64 ids
// [B]; the backward of one field, lookup_backward: the table gradient zeros, then dT[ids[b]] += g[b]
// in the order b = 0, 1, ... (index_add_'s, each sum rounded alike), the padding row zeroed after (as
// nn.Embedding's padding_idx), reading g's rows in place (a column block of the field matrix's
// gradient).
template <typename I>
void check_ids(const I* ip, int64_t n, int64_t V, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < V, what, ": index ", static_cast<int64_t>(ip[i]), " out of range [0, ", V, ")");
}

std::vector<torch::Tensor> field_lookups_forward(std::vector<torch::Tensor> weights, std::vector<torch::Tensor> ids) {
  TORCH_CHECK(weights.size() == ids.size(), "field_lookups_forward: one ids tensor per table expected");
  std::vector<torch::Tensor> out;
  out.reserve(weights.size());
  for (size_t f = 0; f < weights.size(); ++f) {
    const auto& W = weights[f];
    const auto& x = ids[f];
    TORCH_CHECK(W.dim() == 2 && W.is_contiguous() && W.scalar_type() == torch::kFloat && x.dim() == 1 &&
                x.is_contiguous() && (x.scalar_type() == torch::kInt || x.scalar_type() == torch::kLong),
                "field_lookups_forward: contiguous float32 tables [V, d] and int32 / int64 ids [B] expected");
    const int64_t B = x.size(0), V = W.size(0), d = W.size(1);
    auto o = torch::empty({B, d}, W.options());
    const float* wp = W.data_ptr<float>();
    float* op = o.data_ptr<float>();
    if (x.scalar_type() == torch::kInt) {
      const int32_t* ip = x.data_ptr<int32_t>();
      check_ids(ip, B, V, "field_lookups_forward");
      if (d == 16) gather16(wp, ip, op, B);
      else for (int64_t b = 0; b < B; ++b) std::memcpy(op + b * d, wp + static_cast<int64_t>(ip[b]) * d, d * sizeof(float));
    } else {
      const int64_t* ip = x.data_ptr<int64_t>();
      check_ids(ip, B, V, "field_lookups_forward");
      if (d == 16) gather16(wp, ip, op, B);
      else for (int64_t b = 0; b < B; ++b) std::memcpy(op + b * d, wp + ip[b] * d, d * sizeof(float));
    }
    out.push_back(o);
  }
  return out;
}

template <typename I>
void lookup_bwd_rows(const float* gp, int64_t gs, const I* ip, float* op, int64_t B, int64_t d) {
  for (int64_t b = 0; b < B; ++b) {
    const float* gb = gp + b * gs;
    float* orow = op + static_cast<int64_t>(ip[b]) * d;
    for (int64_t c = 0; c < d; ++c) orow[c] = orow[c] + gb[c];
  }
}

torch::Tensor lookup_backward(torch::Tensor g, torch::Tensor ids, int64_t rows, int64_t padding_idx) {
  TORCH_CHECK(g.dim() == 2 && ids.dim() == 1 && g.size(0) == ids.size(0) && g.scalar_type() == torch::kFloat &&
              (ids.scalar_type() == torch::kInt || ids.scalar_type() == torch::kLong),
              "lookup_backward: float32 g [B, d] and int32 / int64 ids [B] expected");
  if (!(g.stride(1) == 1 && g.stride(0) >= g.size(1))) g = g.contiguous();
  ids = ids.contiguous();
  const int64_t B = g.size(0), d = g.size(1);
  auto out = torch::zeros({rows, d}, g.options());
  const float* gp = g.data_ptr<float>();
  float* op = out.data_ptr<float>();
  if (ids.scalar_type() == torch::kInt) {
    const int32_t* ip = ids.data_ptr<int32_t>();
    check_ids(ip, B, rows, "lookup_backward");
    lookup_bwd_rows(gp, g.stride(0), ip, op, B, d);
  } else {
    const int64_t* ip = ids.data_ptr<int64_t>();
    check_ids(ip, B, rows, "lookup_backward");
    lookup_bwd_rows(gp, g.stride(0), ip, op, B, d);
  }
  if (padding_idx >= 0) out[padding_idx].zero_();
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pooled_lookup_forward", &pooled_lookup_forward, "sum_l w[b, l] T[ids[b, l]] (bmm by chunks)");
  m.def("pooled_lookup_backward", &pooled_lookup_backward, "dT of sum_l w[b, l] T[ids[b, l]] (index_add order)");
  m.def("small_attention_forward", &small_attention_forward, "softmax(scale Q K^T) V from qkv [B, F, 3 H dh]");
  m.def("small_attention_backward", &small_attention_backward, "dqkv of small_attention_forward");
  m.def("cross_layer_forward", &cross_layer_forward, "x0 * h + x (DCN-V2 cross layer after its addmm)");
  m.def("cross_layer_backward", &cross_layer_backward, "the elementwise backward of a DCN-V2 cross layer");
  m.def("augru_forward", &augru_forward, "DIEN's AUGRU recurrence, last state (and what the backward needs)");
  m.def("augru_backward", &augru_backward, "gradients of augru_forward (autograd's order for the PyTorch loop)");
  m.def("pair_products", &pair_products, "E[:, i] * E[:, j] for the field pairs i < j (AFM)");
  m.def("pair_relu_backward", &pair_relu_backward, "threshold_backward(gs h^T, H) of AFM's attention net");
  m.def("pair_products_backward", &pair_products_backward, "gradient of E through AFM's pair products");
  m.def("field_lookups_forward", &field_lookups_forward, "weights[f][ids[f]] for several one-valued fields");
  m.def("lookup_backward", &lookup_backward, "the table gradient of one lookup (index_add_'s order)");
  m.def("adam_step", &adam_step, "torch.optim.Adam's single-tensor step on float32 CPU tensors (bit for bit)");
}
