// Fused per-pair parts of EGIN's graph loss (ctrgraph.layers.negative_queue._PairSoftplus; §3.2,
// Algorithm 1), CPU. For P pairs (anchor id a[p] of table A [VA, d], positive id b[p] of B [VB, d]):
//
//   pair_dot:      dot[p] = A[a[p]] . B[b[p]]                                      -> [P]
//   pair_scatter:  gA[a[p]] += w[p] B[b[p]],  gB[b[p]] += w[p] A[a[p]]            -> gA, gB
//                  (one buffer gA when A and B are one table)
//
// Neither allocates anything of the pairs' size but the [P] result: the PyTorch path gathers two
// [P, d] blocks, multiplies them and scatters two more. The per-pair softplus of the loss stays a
// vectorised tensor operation between the two. The scatter visits the pairs in order in one thread
// (concurrent adds into one table row would race).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>

namespace {

torch::Tensor pair_dot(torch::Tensor A, torch::Tensor a, torch::Tensor B, torch::Tensor b) {
  TORCH_CHECK(!A.is_cuda(), "pair_softmax native kernel: CPU tensors only");
  A = A.contiguous(); B = B.contiguous(); a = a.contiguous(); b = b.contiguous();
  const int64_t P = a.size(0), d = A.size(1);
  TORCH_CHECK(B.size(1) == d && b.size(0) == P, "pair_dot: shapes do not agree");
  auto out = torch::empty({P}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "pair_dot", [&] {
    const scalar_t* Ap = A.data_ptr<scalar_t>();
    const scalar_t* Bp = B.data_ptr<scalar_t>();
    const int64_t* ap = a.data_ptr<int64_t>();
    const int64_t* bp = b.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, P, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const scalar_t* x = Ap + ap[p] * d;
        const scalar_t* y = Bp + bp[p] * d;
        scalar_t acc = 0;
        for (int64_t k = 0; k < d; ++k) acc += x[k] * y[k];
        o[p] = acc;
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> pair_scatter(torch::Tensor A, torch::Tensor a, torch::Tensor B, torch::Tensor b,
                                        torch::Tensor w, bool same_table) {
  TORCH_CHECK(!A.is_cuda(), "pair_softmax native kernel: CPU tensors only");
  A = A.contiguous(); B = B.contiguous(); a = a.contiguous(); b = b.contiguous(); w = w.contiguous();
  const int64_t P = a.size(0), d = A.size(1);
  TORCH_CHECK(B.size(1) == d && b.size(0) == P && w.size(0) == P, "pair_scatter: shapes do not agree");
  auto gA = torch::zeros_like(A);
  auto gB = same_table ? torch::zeros({0, d}, B.options()) : torch::zeros_like(B);
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "pair_scatter", [&] {
    const scalar_t* Ap = A.data_ptr<scalar_t>();
    const scalar_t* Bp = B.data_ptr<scalar_t>();
    const int64_t* ap = a.data_ptr<int64_t>();
    const int64_t* bp = b.data_ptr<int64_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gAp = gA.data_ptr<scalar_t>();
    scalar_t* gBp = same_table ? gAp : gB.data_ptr<scalar_t>();
    for (int64_t p = 0; p < P; ++p) {
      const scalar_t* x = Ap + ap[p] * d;
      const scalar_t* y = Bp + bp[p] * d;
      scalar_t* gx = gAp + ap[p] * d;
      scalar_t* gy = gBp + bp[p] * d;
      const scalar_t s = wp[p];
      for (int64_t k = 0; k < d; ++k) {
        const scalar_t xk = x[k], yk = y[k];
        gx[k] += s * yk;
        gy[k] += s * xk;
      }
    }
  });
  return {gA, gB};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pair_dot", &pair_dot, "dot products of id pairs of two tables [P]");
  m.def("pair_scatter", &pair_scatter, "gA[a] += w B[b], gB[b] += w A[a] (gradients of the pairs' dot products)");
}
