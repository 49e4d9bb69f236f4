"""Build ctrgraph's native CPU kernels into ``TORCH_EXTENSIONS_DIR`` (torch's default cache when unset),
in the order the test suite first needs them; an already built kernel is only loaded.

Started in the background by ``tests/conftest.py`` at the start of a session: on a fresh clone (CI)
the cache is empty and the five kernels take minutes of compiler time, which would otherwise be spent
one after another inside the tests that first call them, while the test process (mostly one busy
thread) leaves the machine's other core idle. A test that needs a kernel meanwhile waits on torch's
build lock (``<dir>/lock``) and then loads the finished build; nothing is compiled twice. SIGTERM
(sent to the process group: this process, ninja and the compiler) stops the builds with the lock
released (torch releases it in a ``finally``)."""
from __future__ import annotations

import signal

STOPPED = []


def _stop(*_):
    STOPPED.append(True)
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _stop)

from ctrgraph.graphs import native as graphs  # noqa: E402
from ctrgraph.layers import graphfm_native  # noqa: E402
from ctrgraph.layers import native as layers  # noqa: E402

for build in (layers.kernel, graphs.search_graph_kernel, graphs.spmm_kernel, graphs.kernel, graphfm_native.kernel):
    if STOPPED:
        break
    build()
