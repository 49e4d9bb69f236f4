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
// keeps the attention weights P [B, H, F, F] for the backward, which writes dqkv in the layout of qkv.
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

// exp for the softmax of the attention (inputs <= 0 there): Cody-Waite reduction by ln 2 (n rounded
// to nearest by the 1.5 * 2^23 trick) and Cephes' degree-6 polynomial for expf (within 2 ulp of std::exp), written without calls or branches so
// that the loop over a row vectorises
inline float exp_poly(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof(float));
  return p * scale;
}
inline double exp_poly(double x) { return std::exp(x); }

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

// The attention of one (row, head) with compile-time head width DH and the field count padded to FP
// (K and V rows beyond F are zero, their scores masked out of the max and their weights set to 0), so
// that every inner loop has a constant trip count and vectorises.
template <int DH, int FP>
void attention_rows_fwd(const float* x, float* o, float* pp, int64_t b0, int64_t b1, int64_t F, int64_t H,
                        int64_t D, float sc) {
  const int64_t row = 3 * D;
  alignas(64) float KT[DH][FP], VV[FP][DH], s[FP], valid[FP], neg[FP], acc[DH];
  for (int j = 0; j < FP; ++j) {
    valid[j] = j < F ? 1.0f : 0.0f;
    neg[j] = j < F ? 0.0f : -std::numeric_limits<float>::infinity();
  }
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * F * row;
    for (int64_t h = 0; h < H; ++h) {
      const float* q = xb + h * DH;
      const float* k = xb + D + h * DH;
      const float* v = xb + 2 * D + h * DH;
      for (int j = 0; j < FP; ++j)
        for (int c = 0; c < DH; ++c) {
          KT[c][j] = j < F ? k[j * row + c] : 0.0f;
          VV[j][c] = j < F ? v[j * row + c] : 0.0f;
        }
      float* Pbh = pp + (b * H + h) * F * F;
      for (int64_t i = 0; i < F; ++i) {
        for (int j = 0; j < FP; ++j) s[j] = 0.0f;
        for (int c = 0; c < DH; ++c) {
          const float qc = q[i * row + c];
          for (int j = 0; j < FP; ++j) s[j] += qc * KT[c][j];
        }
        float m = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < FP; ++j) {
          s[j] = s[j] * sc + neg[j];
          m = std::max(m, s[j]);
        }
        for (int j = 0; j < FP; ++j) s[j] = exp_poly(s[j] - m) * valid[j];
        float sum = 0.0f;
        for (int j = 0; j < FP; ++j) sum += s[j];
        const float inv = 1.0f / sum;
        for (int j = 0; j < FP; ++j) s[j] *= inv;
        for (int64_t j = 0; j < F; ++j) Pbh[i * F + j] = s[j];
        for (int c = 0; c < DH; ++c) acc[c] = 0.0f;
        for (int j = 0; j < FP; ++j)
          for (int c = 0; c < DH; ++c) acc[c] += s[j] * VV[j][c];
        float* oi = o + (b * F + i) * D + h * DH;
        for (int c = 0; c < DH; ++c) oi[c] = acc[c];
      }
    }
  }
}

template <int DH, int FP>
void attention_rows_bwd(const float* x, const float* gp, const float* pp, float* dx, int64_t b0, int64_t b1,
                        int64_t F, int64_t H, int64_t D, float sc) {
  const int64_t row = 3 * D;
  alignas(64) float VT[DH][FP], KK[FP][DH], dK[FP][DH], dV[FP][DH], P[FP], dp[FP], gi[DH], qi[DH], dq[DH];
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * F * row;
    float* dxb = dx + b * F * row;
    for (int64_t h = 0; h < H; ++h) {
      const float* q = xb + h * DH;
      const float* k = xb + D + h * DH;
      const float* v = xb + 2 * D + h * DH;
      for (int j = 0; j < FP; ++j)
        for (int c = 0; c < DH; ++c) {
          VT[c][j] = j < F ? v[j * row + c] : 0.0f;
          KK[j][c] = j < F ? k[j * row + c] : 0.0f;
          dK[j][c] = 0.0f;
          dV[j][c] = 0.0f;
        }
      const float* Pbh = pp + (b * H + h) * F * F;
      for (int64_t i = 0; i < F; ++i) {
        for (int j = 0; j < FP; ++j) P[j] = j < F ? Pbh[i * F + j] : 0.0f;
        const float* g = gp + (b * F + i) * D + h * DH;
        for (int c = 0; c < DH; ++c) {
          gi[c] = g[c];
          qi[c] = q[i * row + c];
        }
        for (int j = 0; j < FP; ++j)
          for (int c = 0; c < DH; ++c) dV[j][c] += P[j] * gi[c];
        for (int j = 0; j < FP; ++j) dp[j] = 0.0f;
        for (int c = 0; c < DH; ++c)
          for (int j = 0; j < FP; ++j) dp[j] += gi[c] * VT[c][j];
        float r = 0.0f;
        for (int j = 0; j < FP; ++j) r += P[j] * dp[j];
        for (int j = 0; j < FP; ++j) dp[j] = P[j] * (dp[j] - r) * sc;
        for (int c = 0; c < DH; ++c) dq[c] = 0.0f;
        for (int j = 0; j < FP; ++j)
          for (int c = 0; c < DH; ++c) {
            dq[c] += dp[j] * KK[j][c];
            dK[j][c] += dp[j] * qi[c];
          }
        float* dQ = dxb + i * row + h * DH;
        for (int c = 0; c < DH; ++c) dQ[c] = dq[c];
      }
      for (int64_t j = 0; j < F; ++j)
        for (int c = 0; c < DH; ++c) {
          dxb[j * row + D + h * DH + c] = dK[j][c];
          dxb[j * row + 2 * D + h * DH + c] = dV[j][c];
        }
    }
  }
}

using FwdFn = void (*)(const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, float);
using BwdFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                       int64_t, float);

template <int DH>
std::pair<FwdFn, BwdFn> pick_fp(int64_t F) {
  if (F <= 16) return {&attention_rows_fwd<DH, 16>, &attention_rows_bwd<DH, 16>};
  if (F <= 32) return {&attention_rows_fwd<DH, 32>, &attention_rows_bwd<DH, 32>};
  return {nullptr, nullptr};
}

// the specialised float kernels for (head width, field count), or nulls (generic loops)
std::pair<FwdFn, BwdFn> specialised(int64_t dh, int64_t F) {
  switch (dh) {
    case 4: return pick_fp<4>(F);
    case 8: return pick_fp<8>(F);
    case 16: return pick_fp<16>(F);
    case 32: return pick_fp<32>(F);
    default: return {nullptr, nullptr};
  }
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
            scalar_t* Pi = Pbh + i * F;
            for (int64_t j = 0; j < F; ++j) Pi[j] = s[j] * inv;
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
      std::vector<scalar_t> vT(dh * F), dS(F * F), dq(dh);
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
            const scalar_t* Pi = Pbh + i * F;
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pooled_lookup_backward", &pooled_lookup_backward, "dT of sum_l w[b, l] T[ids[b, l]] (index_add order)");
  m.def("small_attention_forward", &small_attention_forward, "softmax(scale Q K^T) V from qkv [B, F, 3 H dh]");
  m.def("small_attention_backward", &small_attention_backward, "dqkv of small_attention_forward");
}
