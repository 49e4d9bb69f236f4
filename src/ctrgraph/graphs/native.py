"""Native CPU kernels: masked pair attention over an edge list (``csrc/pair_attention.cpp``) and the
scaled 0/1 sparse product of DG-ENN's per-step graphs (``csrc/scaled_spmm.cpp``, :func:`scaled_spmm`).

:func:`csr_pair_attention` is GAT's attention for one relation given in CSR form, out[n, φ] =
Σ_e α[e, φ] v[col[e], φ] with α = softmax over n's edges of LeakyReLU(s_i[n, φ] + s_j[col[e], φ]) (DemiNet's
r_sim, Eqs. 6-8), in one pass over the edges: no [L, L] score blocks, no padding, and only α [E, Φ]
kept for the backward. It is a C++ extension compiled on first use with PyTorch's own
``torch.utils.cpp_extension`` (a C++ compiler and ninja needed; about 30 s once, cached under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). Where it cannot be built,
:func:`kernel` returns None (with one warning) and callers keep their pure-PyTorch path
(:func:`ctrgraph.graphs.pair_attention.pair_attention`); ``CTRGRAPH_NATIVE=0`` turns it off. CUDA
tensors always take the PyTorch path.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

SLOPE = 0.2  # GAT's LeakyReLU slope
_SOURCE = Path(__file__).with_name("csrc") / "pair_attention.cpp"
_STATE: dict[str, object] = {}
# -O3 with reassociation (vectorised dot products and sums; no -ffast-math: infinities and NaN keep
# their meaning); no -march=native, so a cached build stays valid on another CPU of the same kind
CFLAGS = ["-O3", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
_SPMM_SOURCE = Path(__file__).with_name("csrc") / "scaled_spmm.cpp"
# the sparse product keeps IEEE order and rounding (no reassociation, no FMA contraction): its sums are
# those of a fixed order (four partial sums per row), the same on every CPU path (AVX-512, AVX2, portable; tested)
SPMM_CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
# EGIN's kernel: vectorised by explicit 16-lane vectors (its exp needs IEEE order: no reassociation)
SEARCH_CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]


def enabled() -> bool:
    """False when ``CTRGRAPH_NATIVE`` is set to 0 / false / no / off."""
    return os.environ.get("CTRGRAPH_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def build_extension(name: str, source: Path, what: str, cflags: list[str] | None = None):
    """The C++ extension ``name`` built from ``source`` (compiled once, cached under
    ``TORCH_EXTENSIONS_DIR``; ``cflags`` default :data:`CFLAGS`); None where disabled, while tracing /
    exporting, or not buildable (one warning). Shared with :mod:`ctrgraph.layers.native`."""
    if not enabled() or torch.jit.is_tracing():
        return None
    if name not in _STATE:
        try:
            import shutil

            from torch.utils.cpp_extension import load

            bindir = str(Path(sys.executable).parent)  # the env's ninja (the ``ninja`` wheel), not activated
            if shutil.which("ninja") is None and shutil.which("ninja", path=bindir):
                os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

            print(f"ctrgraph: loading the native {what} kernel (compiled once on first use, ~30 s)",
                  file=sys.stderr, flush=True)
            _STATE[name] = load(name, [str(source)], extra_cflags=CFLAGS if cflags is None else cflags, verbose=False)
        except Exception as exc:  # no compiler, no ninja, read-only cache ...
            warnings.warn(f"ctrgraph: the native {what} kernel could not be built ({exc.__class__.__name__}: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); using the PyTorch path",
                          RuntimeWarning, stacklevel=3)
            _STATE[name] = None
    return _STATE[name]


def kernel():
    """The compiled extension module, or None where it is disabled or cannot be built, and while
    ``torch.jit.trace`` or the ONNX exporter records a model (an autograd Function of this extension
    cannot be serialised: every caller then takes its PyTorch path)."""
    return build_extension("ctrgraph_pair_attention", _SOURCE, "pair-attention")


def search_graph_kernel():
    """EGIN's fused pieces (``csrc/search_graph.cpp``): the graph loss of one relation, forward and
    backward (:class:`ctrgraph.layers.negative_queue._FusedPairSoftmax`), and the q2i edge enumeration
    (:func:`ctrgraph.graphs.search_pairs.span_pairs`); None as for :func:`kernel`."""
    return build_extension("ctrgraph_search_graph", _SOURCE.with_name("search_graph.cpp"), "search-graph",
                           SEARCH_CFLAGS)


def spmm_kernel():
    """The compiled ``csrc/scaled_spmm.cpp`` (:func:`scaled_spmm`), or None as for :func:`kernel`."""
    return build_extension("ctrgraph_scaled_spmm", _SPMM_SOURCE, "sparse-product", SPMM_CFLAGS)


def scaled_spmm(crow: torch.Tensor, col: torch.Tensor, s: torch.Tensor, x: torch.Tensor,
                tgt: torch.Tensor | None = None, src: torch.Tensor | None = None, mode: int = 0,
                add: torch.Tensor | None = None, div: float = 0.0):
    """``y = s * (A (s x) - D (s x))`` for the 0/1 CSR structure ``A`` (``crow``, ``col``: int32 or int64;
    its values are not read), node scales ``s`` [n] and dense ``x`` [n, d] (float32 / float64, CPU), where
    ``D`` holds the dropped directed edges ``(tgt[k], src[k])``; ``mode`` 0 subtracts them from each row's
    sum one by one (the forward of :class:`~ctrgraph.graphs.propagate.ScaledAdjacency`), mode 1 adds
    their sum, accumulated from zero (its backward), as the PyTorch compositions do. Row sums: the
    rounded products ``s[c] x[c]``, entry j of a row added to partial sum j % 4 in order, then
    ``(p0 + p1) + (p2 + p3)`` (``csrc/scaled_spmm.cpp``); MKL's sparse product sums in another order,
    so results differ from the PyTorch path in the last bits. With ``add`` [n, d]: returns ``(y, z)``,
    ``z = (add + y) / div`` (``div`` 0: no division), computed row by row in the same pass (LightGCN's
    layer sums, Eq. 13). Needs :func:`spmm_kernel` (check it first)."""
    ext = spmm_kernel()
    if ext is None:
        raise RuntimeError("scaled_spmm: the native kernel is not available (ctrgraph.graphs.native.spmm_kernel())")
    none = torch.zeros(0, dtype=torch.int64)
    tgt = none if tgt is None else tgt
    src = none if src is None else src
    y, z = ext.scaled_spmm(crow, col, s.to(x.dtype), x, tgt, src, mode,
                           torch.zeros(0, dtype=x.dtype) if add is None else add, float(div))
    return y if add is None else (y, z)


def lightgcn(crow: torch.Tensor, col: torch.Tensor, s: torch.Tensor, x: torch.Tensor, tgt: torch.Tensor | None,
             src: torch.Tensor | None, mode: int, n_layers: int, div: float = 0.0) -> torch.Tensor:
    """LightGCN's ``n_layers`` products with the matrix of :func:`scaled_spmm` and their sum (Eqs. 11, 13),
    in the kernel: mode 0 (forward of ``x``) ``((h0 + h1) + ... + h_L) [/ div]`` with ``h_(l+1) = Â h_l``;
    mode 1 (backward of the gradient ``x``, the drops given swapped) ``u_0`` with ``g' = x [/ div]``,
    ``u_L = g'``, ``u_l = g' + Â u_(l+1)``. The same operations per element as a loop over
    :func:`scaled_spmm` (tested bit for bit), without a pass over the node arrays per layer sum."""
    ext = spmm_kernel()
    if ext is None:
        raise RuntimeError("lightgcn: the native kernel is not available (ctrgraph.graphs.native.spmm_kernel())")
    none = torch.zeros(0, dtype=torch.int64)
    return ext.lightgcn(crow, col, s.to(x.dtype), x, none if tgt is None else tgt, none if src is None else src,
                        mode, n_layers, float(div))


def lightgcn_parts(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
                   s: torch.Tensor, x: torch.Tensor, mode: int, div: float = 0.0) -> torch.Tensor:
    """:func:`lightgcn` with its own 0/1 structure and dropped edges per product: ``parts[l] = (crow, col,
    tgt, src)`` is the l-th product computed (``len(parts)`` layers; the backward, mode 1, takes them in
    reverse layer order with each part's drops swapped). With one structure repeated it equals
    :func:`lightgcn` bit for bit (tested). DG-ENN's sampled edge parts (``edge_parts``)."""
    ext = spmm_kernel()
    if ext is None:
        raise RuntimeError("lightgcn_parts: the native kernel is not available (ctrgraph.graphs.native.spmm_kernel())")
    none = torch.zeros(0, dtype=torch.int64)
    return ext.lightgcn_parts([p[0] for p in parts], [p[1] for p in parts], s.to(x.dtype), x,
                              [none if p[2] is None else p[2] for p in parts],
                              [none if p[3] is None else p[3] for p in parts], mode, float(div))


def ordered_sum(base: torch.Tensor, terms: list[torch.Tensor], sels: list[torch.Tensor | None]) -> torch.Tensor:
    """``((base + t_1) + t_2) + ...`` row by row in the kernel, term ``i`` the dense [n, d] ``terms[i]`` (``sels[i]``
    None) or the rows ``terms[i][sels[i]]`` with index ``terms[i].shape[0]`` a zero row: the additions of
    ``base + torch.cat([p, zeros(1, d)]).index_select(0, sel) + ...`` (same values, bit for bit; tested) in
    one pass, without the gathered copies. CPU float tensors; needs :func:`spmm_kernel`. The linear attribute
    stage calls the kernel's ``ordered_sum`` from C++ (``linear_attr_forward``); this wrapper exposes it to
    its bit-for-bit test."""
    ext = spmm_kernel()
    if ext is None:
        raise RuntimeError("ordered_sum: the native kernel is not available (ctrgraph.graphs.native.spmm_kernel())")
    none = torch.zeros(0, dtype=torch.int64)
    return ext.ordered_sum(base, list(terms), [none if s is None else s for s in sels])


def dg_drops(label: torch.Tensor, user: torch.Tensor, item: torch.Tensor, n_items: int, keys: torch.Tensor,
             uptr: torch.Tensor, ids: list[torch.Tensor], uv: list[torch.Tensor], vv: list[torch.Tensor]
             ) -> list[torch.Tensor | None]:
    """DG-ENN's per-step drops in one call (``csrc/scaled_spmm.cpp``: ``dg_drops``): the batch's positive
    keys ``user * n_items + item`` looked up in the drop table (``keys`` sorted, ``uptr`` each user's first
    key, ``ids`` = its uv pair ids and (previous, v) / (next, v) vv pair ids), then per graph (``uv`` /
    ``vv``: :meth:`~ctrgraph.graphs.dg.DropGraph.native_state`, [] for none) the dropped directed edges
    and the node scales after the drop. Returns ``[rows, cols, s]`` of the uv graph then of the vv graph
    (rows / cols None where no pair is gone, all three None for a missing graph); the values of
    ``DualGraphEmbedding._target_drops_np`` followed by ``DropGraph.operator`` (tested). Needs
    :func:`spmm_kernel`."""
    ext = spmm_kernel()
    if ext is None:
        raise RuntimeError("dg_drops: the native kernel is not available (ctrgraph.graphs.native.spmm_kernel())")
    out = ext.dg_drops(label, user, item, int(n_items), keys, uptr, ids, uv, vv)
    return [None if (i % 3 < 2 and t is not None and t.numel() == 0) else t for i, t in enumerate(out)]


class _CSRAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_i, s_j, v, z, rowptr, col, inst):
        ctx.ext = kernel()
        out, oz, alpha = ctx.ext.forward(s_i, s_j, v, z, rowptr, col, SLOPE)
        ctx.save_for_backward(s_i, s_j, v, z, alpha, rowptr, col, inst)
        return out, oz

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g, gz):
        s_i, s_j, v, z, alpha, rowptr, col, inst = ctx.saved_tensors
        g = torch.zeros_like(v) if g is None else g
        gz = torch.zeros(z.shape, dtype=v.dtype) if gz is None else gz
        gi, gj, gv, gzz = ctx.ext.backward(g, gz, s_i, s_j, v, z, alpha, rowptr, col, inst, SLOPE)
        return gi, gj, gv, (gzz if z.numel() else None), None, None, None


def csr_pair_attention(s_i: torch.Tensor, s_j: torch.Tensor, v: torch.Tensor, rowptr: torch.Tensor,
                       col: torch.Tensor, inst: torch.Tensor, z: torch.Tensor | None = None):
    """s_i, s_j [N, Φ] (receiver / sender halves of the score), v [N, Φ, C], ``rowptr`` [N + 1] and ``col``
    [E] (int64: node n receives from col[rowptr[n]:rowptr[n + 1]]), ``inst`` [B + 1] (node ranges of
    the instances; no edge crosses one) -> out [N, Φ, C]; a node without edges gets zeros. With ``z``
    [N, Φ] (a scalar message per node and head, e.g. DemiNet's w_d · h) -> (out, Σ_e α z [N, Φ]).
    Needs :func:`kernel` (check it first)."""
    N, P, _ = v.shape
    if (s_i.shape != (N, P) or s_j.shape != (N, P) or rowptr.shape != (N + 1,) or col.dim() != 1
            or (z is not None and z.shape != (N, P))):
        raise ValueError(f"csr_pair_attention: shapes s_i {tuple(s_i.shape)}, s_j {tuple(s_j.shape)}, "
                         f"v {tuple(v.shape)}, rowptr {tuple(rowptr.shape)}, col {tuple(col.shape)}"
                         f"{'' if z is None else f', z {tuple(z.shape)}'} do not agree")
    if kernel() is None:
        raise RuntimeError("csr_pair_attention: the native kernel is not available (ctrgraph.graphs.native.kernel())")
    out, oz = _CSRAttention.apply(s_i, s_j, v, v.new_zeros(0) if z is None else z, rowptr, col, inst)
    return out if z is None else (out, oz)

class _HeadScore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, slope):
        ctx.ext, ctx.slope = kernel(), slope
        ctx.save_for_backward(x, w)
        return ctx.ext.head_score_forward(x, w, b, slope)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx, gw = ctx.ext.head_score_backward(g, x, w, ctx.slope)
        return gx, gw, g.sum(0), None


def head_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    """K per-head linear scorers after a LeakyReLU: s[n, k] = b[k] + Σ_h w[k, h] LeakyReLU(x[n, k H + h]);
    x [N, K H], w [K, H], b [K] -> [N, K]. The fused kernel on the CPU where it is built (nothing of
    x's size kept for the backward but x), else LeakyReLU and one block-diagonal matmul."""
    K, H = w.shape
    if x.dim() != 2 or x.shape[1] != K * H:
        raise ValueError(f"head_scores: x {tuple(x.shape)} does not match w {tuple(w.shape)}")
    if x.device.type == "cpu" and x.dtype == w.dtype == b.dtype and kernel() is not None:
        return _HeadScore.apply(x, w, b, slope)
    eye = torch.eye(K, dtype=w.dtype, device=w.device)
    block = (w.unsqueeze(-1) * eye.unsqueeze(1)).reshape(K * H, K)  # [K H, K]: head k's w in rows k H ..
    return torch.addmm(b, torch.nn.functional.leaky_relu(x, slope), block)
