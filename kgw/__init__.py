"""kgw: a Jupyter kernel gateway built as a Twisted daemon."""

__version__ = "0.1.0"
