"""Datadog monitoring plugin for aiperf."""

from .plugin import DatadogPhasePlugin

__all__ = ["DatadogPhasePlugin"]
