// EGIN's fused CPU pieces (ctrgraph.graphs.native.search_graph_kernel).
//
// 1. The graph loss of one relation (ctrgraph.layers.negative_queue._FusedPairSoftmax; §3.2,
// Algorithm 1), forward and backward, float32. P pairs: anchor id a[p] of table A [VA, d], positive
// id b[p] of table B [VB, d]; N negatives nB (ids of B, shared by the pairs) and, two ways, nA (ids
// of A). Per pair and direction, with c the number of negatives carrying the positive's id (an
// accidental hit, left out of the denominator in closed form):
//
//   lse[r]  = log sum_n exp(A[r] . B[nB[n]])          once per anchor row r (not per pair)
//   z       = lse[a] - A[a] . B[b]
//   f(z, c) = log(1 - c + e^z)   (softplus(z) for c = 0)   s = df/dz = 1 / (1 + (1 - c) e^-z)
//   total   = sum_p f(z_ab) [+ f(z_ba)]                 (the caller divides by P or 2P)
//
// Forward: per used anchor row one pass over its N logits (max, exp, sum -> lse), then per pair the
// dot product, z, f and s; kept for the backward: lse [V], S[r] = sum of s over the pairs anchored
// at r [V], and s_ab + s_ba [P]. Backward (g = d loss / d total): gA[a] -= g (s_ab + s_ba) B[b],
// gB[b] -= g (s_ab + s_ba) A[a]; per used row, the softmax recomputed, p[n] = exp(logit[n] - lse[r]):
// gA[r] += g S[r] sum_n p[n] E[n], gE[n] += g S[r] p[n] A[r]; gE added into the negatives' rows.
// Nothing of [P, d] or [R, N] is allocated. Logits, exp, softplus and sigmoid run on 16-lane GCC
// vector types (exp: layers_native.cpp's polynomial, within 2 ulp of std::exp; log1p(u), u in (0, 1]:
// 2 atanh(u / (2 + u)) by its series), compiled for AVX-512, AVX2 and the baseline and picked at
// load time (target_clones); -ffp-contract=off and fixed lane orders: every clone gives the same bits.
// Single-threaded (the scatters add into shared rows).
#include <torch/extension.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

#include "../../layers/csrc/simd_exp.h"  // v16, v16i, exp_v16 (shared with layers_native.cpp)

typedef float v8 __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
constexpr int64_t W = 16;  // lanes

#define CTRGRAPH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CTRGRAPH_INLINE inline __attribute__((always_inline))  // into each clone, compiled for its target

CTRGRAPH_INLINE v16 load16(const float* p) { v16 v; std::memcpy(&v, p, sizeof(v16)); return v; }
CTRGRAPH_INLINE void store16(float* p, v16 v) { std::memcpy(p, &v, sizeof(v16)); }
CTRGRAPH_INLINE v16 splat(float x) { return v16{} + x; }

// softplus(z) = max(z, 0) + log1p(u) and sigmoid(z), u = e^-|z| in (0, 1]: log1p(u) = 2 atanh(t),
// t = u / (2 + u) in (0, 1/3], its series to t^17 (truncation below 1e-9 relative)
CTRGRAPH_INLINE void softplus_sigmoid(v16 z, v16& f, v16& s) {
  const v16 zero = v16{};
  const v16 az = z < zero ? -z : z;
  const v16 u = exp_v16(-az);
  const v16 t = u / (u + 2.0f);
  const v16 t2 = t * t;
  v16 q = splat(1.0f / 17.0f);
  q = q * t2 + 1.0f / 15.0f;
  q = q * t2 + 1.0f / 13.0f;
  q = q * t2 + 1.0f / 11.0f;
  q = q * t2 + 1.0f / 9.0f;
  q = q * t2 + 1.0f / 7.0f;
  q = q * t2 + 1.0f / 5.0f;
  q = q * t2 + 1.0f / 3.0f;
  q = q * t2 + 1.0f;
  f = (z > zero ? z : zero) + 2.0f * t * q;
  s = (z >= zero ? splat(1.0f) : u) / (u + 1.0f);
}

CTRGRAPH_INLINE float hsum(v16 v) {  // a fixed tree: halves, quarters, ...
  v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
         __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

CTRGRAPH_INLINE float hmax(v16 v) {
  v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  const v8 k = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  h = h > k ? h : k;
  float m = h[0];
  for (int i = 1; i < 8; ++i) m = h[i] > m ? h[i] : m;
  return m;
}

// The negatives of one direction: E [N, d] transposed and padded to Et [d, NL] (NL = NB * 16 lanes,
// zeros past N), and per lane an additive pad (0, or -inf past N) and a multiplicative one (1 or 0).
struct Negatives {
  int64_t N, NB, NL, d;
  std::vector<float> Et, pad, keep;
  Negatives(const float* T, int64_t d_, const int64_t* ids, int64_t n)
      : N(n), NB((n + W - 1) / W), NL(NB * W), d(d_), Et(d_ * NL, 0.0f), pad(NL, 0.0f), keep(NL, 1.0f) {
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < d; ++k) Et[k * NL + j] = T[ids[j] * d + k];
    for (int64_t j = N; j < NL; ++j) {
      pad[j] = -std::numeric_limits<float>::infinity();
      keep[j] = 0.0f;
    }
  }
};

// the logits of row x against the negatives into l [NL] (padded lanes -inf); returns their max
template <int D, int NBC>
CTRGRAPH_INLINE float logits(const float* x, int64_t d_, const float* Et, const float* pad, int64_t NB_, float* l) {
  const int64_t d = D > 0 ? D : d_, NB = NBC > 0 ? NBC : NB_, NL = NB * W;
  v16 mx = splat(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < NB; ++j) {
    v16 acc = v16{};
    for (int64_t k = 0; k < d; ++k) acc += x[k] * load16(Et + k * NL + j * W);
    acc += load16(pad + j * W);
    mx = acc > mx ? acc : mx;
    store16(l + j * W, acc);
  }
  return hmax(mx);
}

// lse[rows[r]] = log sum_n exp(A[rows[r]] . E[n])
template <int D, int NBC>
CTRGRAPH_INLINE void rows_forward(const float* A, int64_t d, const int64_t* rows, int64_t R, const float* Et,
                         const float* pad, const float* keep, int64_t NB_, float* lse) {
  const int64_t NB = NBC > 0 ? NBC : NB_;
  std::vector<float> l(NB * W);
  for (int64_t r = 0; r < R; ++r) {
    const float m = logits<D, NBC>(A + rows[r] * (D > 0 ? D : d), d, Et, pad, NB, l.data());
    v16 sum = v16{};
    for (int64_t j = 0; j < NB; ++j) sum += exp_v16(load16(l.data() + j * W) - m) * load16(keep + j * W);
    lse[rows[r]] = m + std::log(hsum(sum));
  }
}

// per used row r, c = g S[r]: gA[r] += c sum_n p[n] E[n] and gEt[:, n] += c p[n] A[r], with the
// softmax p[n] = exp(logit[n] - lse[r]) recomputed
template <int D, int NBC>
CTRGRAPH_INLINE void rows_backward(const float* A, int64_t d_, const int64_t* rows, int64_t R, const float* Et,
                          const float* pad, const float* keep, int64_t NB_, const float* lse, const float* S,
                          float g, float* gA, float* gEt) {
  const int64_t d = D > 0 ? D : d_, NB = NBC > 0 ? NBC : NB_, NL = NB * W;
  std::vector<float> l(NL);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = rows[r];
    const float* x = A + row * d;
    logits<D, NBC>(x, d, Et, pad, NB, l.data());
    const float c = g * S[row], m = lse[row];
    for (int64_t j = 0; j < NB; ++j)
      store16(l.data() + j * W, exp_v16(load16(l.data() + j * W) - m) * load16(keep + j * W) * c);
    float* gx = gA + row * d;
    for (int64_t k = 0; k < d; ++k) {
      v16 acc = v16{};
      const float xk = x[k];
      for (int64_t j = 0; j < NB; ++j) {
        const v16 dl = load16(l.data() + j * W);
        acc += dl * load16(Et + k * NL + j * W);
        float* ge = gEt + k * NL + j * W;
        store16(ge, load16(ge) + dl * xk);
      }
      gx[k] += hsum(acc);
    }
  }
}

CTRGRAPH_INLINE void hit(float z, int32_t c, float& f, float& s) {  // c >= 1 hits: as the PyTorch path
  const float t = std::max((1.0f - static_cast<float>(c)) * std::exp(-z), -1.0f + 1e-6f);
  f = z + std::log1p(t);
  s = 1.0f / (1.0f + t);
}

// Per pair: z1 = lse1[a] - A[a].B[b] (c1 = cnt1[b] hits; S1[a] += s1) and, with lse2,
// z2 = lse2[b] - A[a].B[b] (c2 = cnt2[a]; S2[b] += s2); sdot[p] = s1 + s2; returns sum_p f1 (+ f2)
// accumulated in double (16 lane sums, then in lane order)
// accumulated in double (16 lane sums, then in lane order)
CTRGRAPH_INLINE double pairs_forward(const float* A, const int64_t* a, const float* B, const int64_t* b, int64_t P,
                                     int64_t d, const float* lse1, const int32_t* cnt1, const float* lse2,
                                     const int32_t* cnt2, float* S1, float* S2, float* sdot) {
  v8d acc_lo = v8d{}, acc_hi = v8d{};
  alignas(64) float z1[W], z2[W], f1[W], f2[W], s1[W], s2[W], dots[W];
  for (int64_t p0 = 0; p0 < P; p0 += W) {
    const int64_t n = std::min<int64_t>(W, P - p0);
    for (int64_t i = 0; i < n; ++i) {
      const float* x = A + a[p0 + i] * d;
      const float* y = B + b[p0 + i] * d;
      float dot = 0.0f;
      for (int64_t k = 0; k < d; ++k) dot += x[k] * y[k];
      dots[i] = dot;
    }
    for (int64_t i = 0; i < W; ++i) {
      z1[i] = z2[i] = 0.0f;
      if (i >= n) continue;
      z1[i] = lse1[a[p0 + i]] - dots[i];
      if (lse2) z2[i] = lse2[b[p0 + i]] - dots[i];
    }
    v16 f, s;
    softplus_sigmoid(load16(z1), f, s);
    store16(f1, f);
    store16(s1, s);
    if (lse2) {
      softplus_sigmoid(load16(z2), f, s);
      store16(f2, f);
      store16(s2, s);
    } else {
      store16(f2, v16{});
      store16(s2, v16{});
    }
    for (int64_t i = 0; i < W; ++i) {
      if (i >= n) {
        f1[i] = f2[i] = 0.0f;
        continue;
      }
      const int64_t p = p0 + i;
      if (const int32_t c = cnt1[b[p]]) hit(z1[i], c, f1[i], s1[i]);
      S1[a[p]] += s1[i];
      if (lse2) {
        if (const int32_t c = cnt2[a[p]]) hit(z2[i], c, f2[i], s2[i]);
        S2[b[p]] += s2[i];
      }
      sdot[p] = s1[i] + s2[i];
    }
    const v16 fs = load16(f1) + load16(f2);
    acc_lo += __builtin_convertvector(__builtin_shufflevector(fs, fs, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
    acc_hi += __builtin_convertvector(__builtin_shufflevector(fs, fs, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
  }
  double total = 0.0;
  for (int i = 0; i < 8; ++i) total += acc_lo[i];
  for (int i = 0; i < 8; ++i) total += acc_hi[i];
  return total;
}

// gA[a] -= g sdot B[b], gB[b] -= g sdot A[a], in the order 0, H, 1, H + 1, ... (H = ceil(P / 2)).
// For d <= 16 each row update is one 16-lane read-add-write: the lanes past d (the next row's first
// values, or spare) get + 0 and are written back unchanged, the same operations per element as the
// scalar loop (single-threaded, in order); rows within 16 values of a table's end take the scalar loop.
CTRGRAPH_INLINE void pairs_backward(const float* A, int64_t VA, const int64_t* a, const float* B, int64_t VB,
                                    const int64_t* b, int64_t P, int64_t d, const float* sdot, float g, float* gA,
                                    float* gB) {
  const int64_t H = (P + 1) / 2;
  v16 lane;
  for (int i = 0; i < W; ++i) lane[i] = static_cast<float>(i);
  const v16 zero = v16{}, dl = splat(static_cast<float>(d));
  const bool wide = d <= W;
  // pairs k and H + k alternately: neighbouring edges (which share a row) are not back to back
  for (int64_t q = 0; q < 2 * H; ++q) {
    const int64_t p = (q & 1) ? H + (q >> 1) : (q >> 1);
    if (p >= P) continue;
    const float w = -(sdot[p] * g);
    const int64_t ra = a[p] * d, rb = b[p] * d;
    if (wide && ra + W <= VA * d && rb + W <= VB * d) {
      const v16 x = lane < dl ? load16(A + ra) : zero, y = lane < dl ? load16(B + rb) : zero;
      store16(gA + ra, load16(gA + ra) + w * y);
      store16(gB + rb, load16(gB + rb) + w * x);
      continue;
    }
    const float* x = A + ra;
    const float* y = B + rb;
    float* gx = gA + ra;
    float* gy = gB + rb;
    for (int64_t k = 0; k < d; ++k) {
      const float xk = x[k], yk = y[k];
      gx[k] += w * yk;
      gy[k] += w * xk;
    }
  }
}

// Compiled for each target; the embedding size 10 (the paper's) with 100 negatives (7 blocks) unrolled.
CTRGRAPH_CLONES void rows_forward_any(const float* A, int64_t d, const int64_t* rows, int64_t R, const float* Et,
                                      const float* pad, const float* keep, int64_t NB, float* lse) {
  if (d == 10 && NB == 7) return rows_forward<10, 7>(A, d, rows, R, Et, pad, keep, NB, lse);
  rows_forward<0, 0>(A, d, rows, R, Et, pad, keep, NB, lse);
}
CTRGRAPH_CLONES void rows_backward_any(const float* A, int64_t d, const int64_t* rows, int64_t R, const float* Et,
                                       const float* pad, const float* keep, int64_t NB, const float* lse,
                                       const float* S, float g, float* gA, float* gEt) {
  if (d == 10 && NB == 7) return rows_backward<10, 7>(A, d, rows, R, Et, pad, keep, NB, lse, S, g, gA, gEt);
  rows_backward<0, 0>(A, d, rows, R, Et, pad, keep, NB, lse, S, g, gA, gEt);
}
CTRGRAPH_CLONES double pairs_forward_any(const float* A, const int64_t* a, const float* B, const int64_t* b,
                                         int64_t P, int64_t d, const float* lse1, const int32_t* cnt1,
                                         const float* lse2, const int32_t* cnt2, float* S1, float* S2, float* sdot) {
  return pairs_forward(A, a, B, b, P, d, lse1, cnt1, lse2, cnt2, S1, S2, sdot);
}
CTRGRAPH_CLONES void pairs_backward_any(const float* A, int64_t VA, const int64_t* a, const float* B, int64_t VB,
                                        const int64_t* b, int64_t P, int64_t d, const float* sdot, float g, float* gA,
                                        float* gB) {
  pairs_backward(A, VA, a, B, VB, b, P, d, sdot, g, gA, gB);
}

// the distinct ids of ids [n] and ids2 [n2] in increasing order (each checked to be in [0, V))
std::vector<int64_t> used_rows(const int64_t* ids, int64_t n, const int64_t* ids2, int64_t n2, int64_t V) {
  std::vector<uint8_t> used(V, 0);
  bool ok = true;
  for (const auto& [p, m] : {std::pair{ids, n}, std::pair{ids2, n2}})
    for (int64_t i = 0; i < m; ++i) {
      const bool in = static_cast<uint64_t>(p[i]) < static_cast<uint64_t>(V);
      ok &= in;
      used[in ? p[i] : 0] |= static_cast<uint8_t>(in);
    }
  TORCH_CHECK(ok, "pair_softmax: an id out of range [0, ", V, ")");
  std::vector<int64_t> rows;
  for (int64_t v = 0; v < V; ++v)
    if (used[v]) rows.push_back(v);
  return rows;
}

std::vector<int32_t> counts(const torch::Tensor& neg, int64_t V) {
  std::vector<int32_t> c(V, 0);
  const int64_t* np = neg.data_ptr<int64_t>();
  for (int64_t n = 0; n < neg.size(0); ++n) c[np[n]] += 1;
  return c;
}

void check_ids(const torch::Tensor& ids, int64_t V, const char* what, bool range = false) {
  TORCH_CHECK(ids.scalar_type() == torch::kLong && ids.dim() == 1 && ids.is_contiguous(),
              "pair_softmax: ", what, " must be contiguous int64 [n]");
  if (!range) return;
  const int64_t* p = ids.data_ptr<int64_t>();
  bool ok = true;
  for (int64_t i = 0; i < ids.size(0); ++i) ok &= (p[i] >= 0) & (p[i] < V);
  TORCH_CHECK(ok, "pair_softmax: ", what, " out of range [0, ", V, ")");
}

torch::Tensor lse_of(const torch::Tensor& T, const std::vector<int64_t>& rows, const Negatives& E) {
  auto lse = torch::zeros({T.size(0)}, T.options());
  rows_forward_any(T.data_ptr<float>(), T.size(1), rows.data(), static_cast<int64_t>(rows.size()), E.Et.data(),
                   E.pad.data(), E.keep.data(), E.NB, lse.data_ptr<float>());
  return lse;
}

torch::Tensor as_tensor(const std::vector<int64_t>& v) {
  auto t = torch::empty({static_cast<int64_t>(v.size())}, torch::kLong);
  std::copy(v.begin(), v.end(), t.data_ptr<int64_t>());
  return t;
}

// mode 0: one way (anchor A[a], negatives nB); 1: two ways, one table and one negative set (A is B,
// nA is nB: one lse over the union of a and b); 2: two ways, anchor B[b] also against nA.
// Returns (total, sdot [P], rows1, lse1 [VA], S1 [VA], rows2, lse2 [VB], S2 [VB]) (empty where unused).
std::vector<torch::Tensor> pair_softmax_forward(torch::Tensor A, torch::Tensor a, torch::Tensor B, torch::Tensor b,
                                                torch::Tensor nB, torch::Tensor nA, int64_t mode) {
  TORCH_CHECK(A.device().is_cpu() && A.scalar_type() == torch::kFloat && B.scalar_type() == torch::kFloat,
              "pair_softmax: float32 CPU tables only");
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && A.size(1) == B.size(1) && A.is_contiguous() && B.is_contiguous(),
              "pair_softmax: contiguous tables [V, d] of one width");
  TORCH_CHECK(mode >= 0 && mode <= 2, "pair_softmax: mode 0, 1 or 2");
  const int64_t P = a.size(0), d = A.size(1), VA = A.size(0), VB = B.size(0);
  TORCH_CHECK(b.size(0) == P && nB.size(0) > 0, "pair_softmax: shapes do not agree");
  check_ids(a, VA, "a");  // dtype and layout (the range: used_rows)
  check_ids(b, VB, "b", mode == 0);
  check_ids(nB, VB, "negatives of B", true);
  if (mode == 1) TORCH_CHECK(VA == VB, "pair_softmax: mode 1 needs one table");
  if (mode == 2) {
    check_ids(nA, VA, "negatives of A", true);
    TORCH_CHECK(nA.size(0) > 0, "pair_softmax: no negatives of A");
  }
  const float* Ap = A.data_ptr<float>();
  const float* Bp = B.data_ptr<float>();
  const int64_t* ap = a.data_ptr<int64_t>();
  const int64_t* bp = b.data_ptr<int64_t>();
  const auto rows1 = used_rows(ap, P, bp, mode == 1 ? P : 0, VA);
  auto lse1 = lse_of(A, rows1, Negatives(Bp, d, nB.data_ptr<int64_t>(), nB.size(0)));
  auto cB = counts(nB, VB);
  auto S1 = torch::zeros({VA}, A.options());
  auto sdot = torch::empty({P}, A.options());
  auto empty = torch::empty({0}, A.options());
  torch::Tensor lse2 = empty, S2 = empty, rows2 = torch::empty({0}, torch::kLong);
  std::vector<int32_t> cA;
  const int32_t* cnt2 = nullptr;
  float* S2p = nullptr;
  torch::Tensor S2b;
  if (mode == 1) {  // the second direction's sums apart (no store-to-load chain between neighbouring pairs)
    lse2 = lse1;
    cnt2 = cB.data();
    S2b = torch::zeros({VA}, A.options());
    S2p = S2b.data_ptr<float>();
  } else if (mode == 2) {
    const auto r2 = used_rows(bp, P, nullptr, 0, VB);
    lse2 = lse_of(B, r2, Negatives(Ap, d, nA.data_ptr<int64_t>(), nA.size(0)));
    rows2 = as_tensor(r2);
    cA = counts(nA, VA);
    cnt2 = cA.data();
    S2 = torch::zeros({VB}, A.options());
    S2p = S2.data_ptr<float>();
  }
  const double total = pairs_forward_any(Ap, ap, Bp, bp, P, d, lse1.data_ptr<float>(), cB.data(),
                                         mode == 0 ? nullptr : lse2.data_ptr<float>(), cnt2, S1.data_ptr<float>(),
                                         S2p, sdot.data_ptr<float>());
  if (mode == 1) S1.add_(S2b);
  return {torch::full({}, static_cast<float>(total), A.options()), sdot, as_tensor(rows1), lse1, S1, rows2,
          mode == 2 ? lse2 : empty, S2};
}

// The gradients (gA, gB) of g * total (gB empty when `same`: A is B, everything in gA).
std::vector<torch::Tensor> pair_softmax_backward(torch::Tensor g, torch::Tensor A, torch::Tensor a, torch::Tensor B,
                                                 torch::Tensor b, torch::Tensor nB, torch::Tensor nA, int64_t mode,
                                                 bool same, torch::Tensor sdot, torch::Tensor rows1, torch::Tensor lse1,
                                                 torch::Tensor S1, torch::Tensor rows2, torch::Tensor lse2,
                                                 torch::Tensor S2) {
  const float gv = g.item<float>();
  const int64_t P = a.size(0), d = A.size(1);
  auto gA = torch::zeros_like(A);
  auto gB = same ? torch::empty({0, d}, B.options()) : torch::zeros_like(B);
  float* gAp = gA.data_ptr<float>();
  float* gBp = same ? gAp : gB.data_ptr<float>();
  const float* Ap = A.data_ptr<float>();
  const float* Bp = B.data_ptr<float>();
  pairs_backward_any(Ap, A.size(0), a.data_ptr<int64_t>(), Bp, B.size(0), b.data_ptr<int64_t>(), P, d,
                     sdot.data_ptr<float>(), gv, gAp,
                     gBp);
  // anchors of table T (gradient gT) against the negatives neg of table O (gradient gO)
  auto side = [&](const float* T, float* gT, const float* O, float* gO, const torch::Tensor& neg,
                  const torch::Tensor& rows, const torch::Tensor& lse, const torch::Tensor& S) {
    const Negatives E(O, d, neg.data_ptr<int64_t>(), neg.size(0));
    std::vector<float> gEt(d * E.NL, 0.0f);
    rows_backward_any(T, d, rows.data_ptr<int64_t>(), rows.size(0), E.Et.data(), E.pad.data(), E.keep.data(), E.NB,
                      lse.data_ptr<float>(), S.data_ptr<float>(), gv, gT, gEt.data());
    const int64_t* np = neg.data_ptr<int64_t>();
    for (int64_t j = 0; j < E.N; ++j)
      for (int64_t k = 0; k < d; ++k) gO[np[j] * d + k] += gEt[k * E.NL + j];
  };
  side(Ap, gAp, Bp, gBp, nB, rows1, lse1, S1);
  if (mode == 2) side(Bp, gBp, Ap, gAp, nA, rows2, lse2, S2);
  return {gA, gB};
}

// 2. The edges of EGIN's per-instance graphs (ctrgraph.graphs.search_pairs), each as (b, src, dst)
// [P] in the order of the PyTorch path, and the ids at their ends. Integer ids / timestamps of any
// width (int32 / int64 read as they are), boolean masks; one pass over the batch, no [B, L, L] mask.

template <typename F>
void dispatch_int(const torch::Tensor& t, const char* what, F f) {
  if (t.scalar_type() == torch::kLong) return f(static_cast<int64_t*>(nullptr));
  if (t.scalar_type() == torch::kInt) return f(static_cast<int32_t*>(nullptr));
  TORCH_CHECK(false, what, ": int32 or int64 expected, got ", t.scalar_type());
}

struct Edges {  // one per thread, kept between calls: no regrowth of the lists once warm
  std::vector<int64_t> b, src, dst;
  static Edges& local() {
    thread_local Edges e;
    e.b.clear(), e.src.clear(), e.dst.clear();
    return e;
  }
  void add(int64_t x, int64_t i, int64_t j) { b.push_back(x); src.push_back(i); dst.push_back(j); }
  std::vector<torch::Tensor> tensors() const {
    const int64_t P = static_cast<int64_t>(b.size());
    auto tb = torch::empty({P}, torch::kLong), ts = torch::empty({P}, torch::kLong), td = torch::empty({P}, torch::kLong);
    std::copy(b.begin(), b.end(), tb.data_ptr<int64_t>());
    std::copy(src.begin(), src.end(), ts.data_ptr<int64_t>());
    std::copy(dst.begin(), dst.end(), td.data_ptr<int64_t>());
    return {tb, ts, td};
  }
};

torch::Tensor as_bool(const torch::Tensor& m) { return m.to(torch::kBool).contiguous(); }

// i2i (window_pairs): valid positions i, i + o for each offset o of (-w..w without 0, or 1..w when
// not `both`) with |o| < L, grouped by offset, then row-major
std::vector<torch::Tensor> window_pairs(torch::Tensor mask, int64_t w, bool both) {
  mask = as_bool(mask);
  TORCH_CHECK(mask.dim() == 2 && !mask.is_cuda(), "window_pairs: a CPU mask [B, L]");
  const int64_t B = mask.size(0), L = mask.size(1);
  const bool* m = mask.data_ptr<bool>();
  Edges& e = Edges::local();
  for (int64_t o = both ? -w : 1; o <= w; ++o) {
    if (o == 0 || std::abs(o) >= L) continue;
    const int64_t lo = std::max<int64_t>(0, -o), hi = L - std::max<int64_t>(0, o);
    for (int64_t x = 0; x < B; ++x) {
      const bool* r = m + x * L;
      for (int64_t i = lo; i < hi; ++i)
        if (r[i] & r[i + o]) e.add(x, i, i + o);
    }
  }
  return e.tensors();
}

// q2q (query_sessions + session_pairs): a session starts at position 0 and where
// float(ts[m] - ts[m-1]) > gap, cats[m] != cats[m-1], cats[m] <= 0 or (with sim) sim[m] < min_sim
// (the comparisons of the PyTorch path, in float32) and at the row's first valid query; a query's
// session = the number of valid starts up to it - 1; every two valid queries of one session, ordered by instance, query, then partner
// (partners after the query only, unless `both`)
std::vector<torch::Tensor> session_pairs(torch::Tensor ts, torch::Tensor mask, torch::Tensor cats, torch::Tensor sim,
                                         double gap, double min_sim, bool both) {
  mask = as_bool(mask);
  ts = ts.contiguous();
  cats = cats.contiguous();
  const int64_t B = mask.size(0), M = mask.size(1);
  TORCH_CHECK(ts.sizes() == mask.sizes() && cats.sizes() == mask.sizes() && !mask.is_cuda(),
              "session_pairs: CPU ts, mask and cats [B, M]");
  const bool has_sim = sim.numel() > 0;
  if (has_sim) {
    sim = sim.contiguous();
    TORCH_CHECK(sim.scalar_type() == torch::kFloat && sim.sizes() == mask.sizes(), "session_pairs: float32 sim [B, M]");
  }
  const bool* mk = mask.data_ptr<bool>();
  const float* sp = has_sim ? sim.data_ptr<float>() : nullptr;
  const float g = static_cast<float>(gap), ms = static_cast<float>(min_sim);
  Edges& e = Edges::local();
  std::vector<int64_t> sess(M);
  dispatch_int(ts, "session_pairs ts", [&](auto* tt) {
    using T = std::remove_pointer_t<decltype(tt)>;
    dispatch_int(cats, "session_pairs cats", [&](auto* cc) {
      using C = std::remove_pointer_t<decltype(cc)>;
      const T* tp = ts.data_ptr<T>();
      const C* cp = cats.data_ptr<C>();
      for (int64_t x = 0; x < B; ++x) {
        const T* t = tp + x * M;
        const C* c = cp + x * M;
        const bool* r = mk + x * M;
        int64_t count = 0;
        for (int64_t j = 0; j < M; ++j) {
          bool start = j == 0;
          if (j > 0) {
            start = static_cast<float>(static_cast<int64_t>(t[j]) - static_cast<int64_t>(t[j - 1])) > g;
            start |= (c[j] != c[j - 1]) | (c[j] <= 0);
            if (sp) start |= sp[x * M + j] < ms;
          }
          start |= count == 0;  // the row's first valid query (also after a padding hole)
          count += start & r[j];
          sess[j] = r[j] ? count - 1 : -1;
        }
        for (int64_t i = 0; i < M; ++i) {
          if (!r[i]) continue;
          for (int64_t j = both ? 0 : i + 1; j < M; ++j)
            if (j != i && r[j] && sess[j] == sess[i]) e.add(x, i, j);
        }
      }
    });
  });
  return e.tensors();
}

// q2i (span_pairs) for integer timestamps and one category per position: per instance the valid
// clicks ordered by (category, time, position); for each valid query of category c > 0 (in position
// order) the clicks of category c with 0 < t_i - t_q < t (and, with `both`, first those with
// -t < t_i - t_q < 0). Where an instance's valid clicks are in time order (histories are), that
// order within a category is position order and each query's clicks are one time interval of the
// row, found by two binary searches; otherwise the row is sorted. The order of
// search_pairs._span_pairs_keyed.
std::vector<torch::Tensor> span_pairs(torch::Tensor q_ts, torch::Tensor q_mask, torch::Tensor q_cats,
                                      torch::Tensor i_ts, torch::Tensor i_mask, torch::Tensor i_cats,
                                      int64_t t, bool both) {
  TORCH_CHECK(!q_ts.is_cuda(), "span_pairs native kernel: CPU tensors only");
  q_ts = q_ts.to(torch::kLong).contiguous(); q_cats = q_cats.to(torch::kLong).contiguous();
  i_ts = i_ts.to(torch::kLong).contiguous(); i_cats = i_cats.to(torch::kLong).contiguous();
  q_mask = as_bool(q_mask); i_mask = as_bool(i_mask);
  const int64_t B = q_ts.size(0), M = q_ts.size(1), L = i_ts.size(1);
  const int64_t* qt = q_ts.data_ptr<int64_t>();
  const int64_t* qc = q_cats.data_ptr<int64_t>();
  const bool* qm = q_mask.data_ptr<bool>();
  const int64_t* it = i_ts.data_ptr<int64_t>();
  const int64_t* ic = i_cats.data_ptr<int64_t>();
  const bool* im = i_mask.data_ptr<bool>();
  Edges& e = Edges::local();
  std::vector<std::array<int64_t, 3>> row;  // (category, time, position) of the row's valid clicks
  std::vector<int64_t> times, cats, pos;  // the valid clicks in position order
  row.reserve(L), times.reserve(L), cats.reserve(L), pos.reserve(L);
  for (int64_t b = 0; b < B; ++b) {
    times.clear(), cats.clear(), pos.clear();
    bool sorted = true;
    for (int64_t l = 0; l < L; ++l)
      if (im[b * L + l]) {
        if (!times.empty() && it[b * L + l] < times.back()) sorted = false;
        times.push_back(it[b * L + l]), cats.push_back(std::max<int64_t>(ic[b * L + l], 0)), pos.push_back(l);
      }
    if (sorted) {  // each query's clicks: a time interval [lo, hi] of the row, filtered by category
      auto emit = [&](int64_t j, int64_t c, int64_t lo, int64_t hi) {
        if (lo > hi) return;
        const auto first = std::lower_bound(times.begin(), times.end(), lo) - times.begin();
        const auto last = std::upper_bound(times.begin() + first, times.end(), hi) - times.begin();
        for (auto x = first; x < last; ++x)
          if (cats[x] == c) e.add(b, j, pos[x]);
      };
      for (int64_t j = 0; j < M; ++j) {
        const int64_t c = qc[b * M + j], tq = qt[b * M + j];
        if (!qm[b * M + j] || c <= 0) continue;
        if (both) emit(j, c, tq - t + 1, tq - 1);
        emit(j, c, tq + 1, tq + t - 1);
      }
      continue;
    }
    row.clear();
    for (size_t x = 0; x < times.size(); ++x) row.push_back({cats[x], times[x], pos[x]});
    std::sort(row.begin(), row.end());
    auto emit = [&](int64_t j, int64_t c, int64_t lo, int64_t hi) {  // times in [lo, hi]
      if (lo > hi) return;
      auto first = std::lower_bound(row.begin(), row.end(), std::array<int64_t, 3>{c, lo, INT64_MIN});
      auto last = std::lower_bound(first, row.end(), std::array<int64_t, 3>{c, hi, INT64_MAX});
      for (auto x = first; x != last; ++x) e.add(b, j, (*x)[2]);
    };
    for (int64_t j = 0; j < M; ++j) {
      const int64_t c = qc[b * M + j], tq = qt[b * M + j];
      if (!qm[b * M + j] || c <= 0) continue;
      if (both) emit(j, c, tq - t + 1, tq - 1);
      emit(j, c, tq + 1, tq + t - 1);
    }
  }
  return e.tensors();
}

// The ids at both ends of each edge: src_ids[b, src] and dst_ids[b, dst] (int64) [P] each
std::vector<torch::Tensor> pair_ids(torch::Tensor b, torch::Tensor src, torch::Tensor dst, torch::Tensor src_ids,
                                    torch::Tensor dst_ids) {
  b = b.to(torch::kLong).contiguous(), src = src.to(torch::kLong).contiguous(), dst = dst.to(torch::kLong).contiguous();
  src_ids = src_ids.contiguous(), dst_ids = dst_ids.contiguous();
  TORCH_CHECK(src_ids.dim() == 2 && dst_ids.dim() == 2 && src_ids.size(0) == dst_ids.size(0), "pair_ids: [B, L] ids");
  const int64_t P = b.size(0), B = src_ids.size(0), L1 = src_ids.size(1), L2 = dst_ids.size(1);
  const int64_t* bp = b.data_ptr<int64_t>();
  const int64_t* sp = src.data_ptr<int64_t>();
  const int64_t* dp = dst.data_ptr<int64_t>();
  bool ok = true;
  for (int64_t p = 0; p < P; ++p)
    ok &= (bp[p] >= 0) & (bp[p] < B) & (sp[p] >= 0) & (sp[p] < L1) & (dp[p] >= 0) & (dp[p] < L2);
  TORCH_CHECK(ok, "pair_ids: an edge out of range");
  auto out1 = torch::empty({P}, torch::kLong), out2 = torch::empty({P}, torch::kLong);
  int64_t* o1 = out1.data_ptr<int64_t>();
  int64_t* o2 = out2.data_ptr<int64_t>();
  dispatch_int(src_ids, "pair_ids", [&](auto* s_) {
    using S = std::remove_pointer_t<decltype(s_)>;
    dispatch_int(dst_ids, "pair_ids", [&](auto* d_) {
      using D = std::remove_pointer_t<decltype(d_)>;
      const S* si = src_ids.data_ptr<S>();
      const D* di = dst_ids.data_ptr<D>();
      for (int64_t p = 0; p < P; ++p) {
        o1[p] = si[bp[p] * L1 + sp[p]];
        o2[p] = di[bp[p] * L2 + dp[p]];
      }
    });
  });
  return {out1, out2};
}

// IdQueue.push: the ids > 0 of `ids` (any shape, row-major), at most the last `size`, written into the
// ring from ptr on (wrapping); ptr and filled (0-dim int64) updated in place
void queue_push(torch::Tensor ring, torch::Tensor ptr, torch::Tensor filled, torch::Tensor ids) {
  TORCH_CHECK(ring.scalar_type() == torch::kLong && ring.is_contiguous() && ptr.scalar_type() == torch::kLong &&
              filled.scalar_type() == torch::kLong, "queue_push: int64 buffers");
  ids = ids.contiguous();
  const int64_t size = ring.size(0);
  int64_t* rp = ring.data_ptr<int64_t>();
  int64_t& pt = *ptr.data_ptr<int64_t>();
  int64_t& fl = *filled.data_ptr<int64_t>();
  dispatch_int(ids, "queue_push", [&](auto* i_) {
    using I = std::remove_pointer_t<decltype(i_)>;
    const I* ip = ids.data_ptr<I>();
    const int64_t n = ids.numel();
    int64_t valid = 0;
    for (int64_t k = 0; k < n; ++k) valid += ip[k] > 0;
    const int64_t skip = std::max<int64_t>(0, valid - size), take = valid - skip;  // the last `size`
    if (take == 0) return;
    int64_t seen = 0, w = pt;
    for (int64_t k = 0; k < n; ++k) {
      if (ip[k] <= 0) continue;
      if (seen++ < skip) continue;
      rp[w] = static_cast<int64_t>(ip[k]);
      if (++w == size) w = 0;
    }
    pt = (pt + take) % size;
    fl = std::min(size, fl + take);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("span_pairs", &span_pairs, "q2i edges of EGIN's Algorithm 2 (integer times, one category per position)");
  m.def("window_pairs", &window_pairs, "i2i edges of EGIN's Algorithm 1 (window w)");
  m.def("session_pairs", &session_pairs, "q2q edges: query sessions and every two queries of one");
  m.def("pair_ids", &pair_ids, "the ids at both ends of each edge");
  m.def("queue_push", &queue_push, "IdQueue.push in place");
  m.def("pair_softmax_forward", &pair_softmax_forward, "EGIN's graph loss of one relation: total and saved state");
  m.def("pair_softmax_backward", &pair_softmax_backward, "its gradients into the two tables");
}
