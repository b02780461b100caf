"""The package version, in one place (the package, the file header and the server read it)."""

__version__ = "0.1.0"
