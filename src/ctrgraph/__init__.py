"""ctrgraph: graph-enhanced click-through-rate prediction.

Importing the package imports :mod:`ctrgraph.registry`, the one explicit list of every data recipe,
embedding provider and model (``ctrgraph.registry.MODELS`` ...)."""
import os

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime; a value the
# user set wins). On a busy machine, spinning threads of one training fight the other processes for
# the cores and PyTorch's default thread count ran DIN ~3x slower than one thread; with passive
# waiting the default count is as fast as one thread there and costs nothing measurable on an idle
# machine (benchmarks/thread_default.py, docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402
from . import registry  # noqa: E402

__all__ = ["__version__", "registry"]
