"""Moved to `ld_audiences_local.models.rate_window`; kept so that the emulator's import stands until it
imports the model from there."""

from ld_audiences_local.models.rate_window import GLOBAL, RouteRateLimit, RouteWindows, Spent

__all__ = ["GLOBAL", "RouteRateLimit", "RouteWindows", "Spent"]
