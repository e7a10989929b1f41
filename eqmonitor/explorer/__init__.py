"""The NERO explorer: one offline HTML page of NERO's linked views, built from the records of one or two runs."""

from eqmonitor.explorer.page import build_page, write_explorer

__all__ = ["build_page", "write_explorer"]
