"""Shared constants of the callback tests (a module of its own: importing `conftest` clashes with --doctest-modules)."""

C4_SPEC = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}
