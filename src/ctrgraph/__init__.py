"""ctrgraph: graph-enhanced click-through-rate prediction.

Importing the package imports :mod:`ctrgraph.registry`, the one explicit list of every data recipe,
embedding provider and model (``ctrgraph.registry.MODELS`` ...)."""
from ._version import __version__
from . import registry

__all__ = ["__version__", "registry"]
