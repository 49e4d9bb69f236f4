"""Data recipes, one module per data set or generator (:class:`~.base.Recipe`), listed by name in
:mod:`ctrgraph.registry`."""
from .base import Recipe, build_raw, load_encoded, parse_params

__all__ = ["Recipe", "build_raw", "load_encoded", "parse_params"]
