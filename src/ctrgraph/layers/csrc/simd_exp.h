// The 16-lane float exp shared by the native kernels (layers/csrc/layers_native.cpp,
// graphs/csrc/search_graph.cpp): exp_poly of layers_native.cpp lane-wise (inputs clamped to
// [-87, 88], Cody-Waite reduction by ln 2 with n rounded by the 1.5 * 2^23 trick, Cephes' degree-6
// polynomial for expf: within 2 ulp of std::exp), without calls or branches so that loops over it
// vectorise. Included inside each file's anonymous namespace after <cstdint> and <cstring>; both
// files compile it without contraction to fused multiply-add (-ffp-contract=off), so its bits are
// the same in both.
#pragma once

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

inline __attribute__((always_inline)) v16 exp_v16(v16 x) {  // inlined into each target clone
  const v16 lo = v16{} - 87.0f, hi = v16{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  v16 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  v16 p = v16{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
  v16 scale;
  std::memcpy(&scale, &e, sizeof(v16));
  return p * scale;
}
