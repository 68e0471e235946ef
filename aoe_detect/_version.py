"""The package version, in a module of its own so that no module imports the package root
(read it at call time as ``_version.__version__``: tests may patch it)."""

__version__ = "0.1.0"
