"""Collection settings for the whole repository (the tests and the package's doctests)."""

# Deprecated shims (the demos moved to eqmonitor.demos): importing them warns on purpose and they hold no doctests.
collect_ignore = ["eqmonitor/models.py", "eqmonitor/data.py", "eqmonitor/lightning_digits.py"]
