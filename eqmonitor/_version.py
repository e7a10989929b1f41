"""The package version, one layer below everything (records stamp it without importing the package)."""

__version__ = "0.1.0"
