"""The one place the version lives: pyproject.toml reads it (setuptools dynamic
version), `netcore.__version__` re-exports it, and `netcore-server --version`
prints it. Kept free of imports so that setuptools can read it without
importing the compiled package."""
__version__ = "0.1.0"
