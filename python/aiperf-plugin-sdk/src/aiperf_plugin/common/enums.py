"""Alias of :mod:`aiperf_plugin.enums` at the seed's path (``aiperf.common.enums``)."""

from ..enums import CreditPhase, HookName

__all__ = ["CreditPhase", "HookName"]
