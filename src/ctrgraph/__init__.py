"""ctrgraph: graph-enhanced click-through-rate prediction."""
__version__ = "0.1.0"
