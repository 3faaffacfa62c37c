"""Custom monitor example plugin for aiperf."""

from .plugin import CustomMonitorPlugin

__all__ = ["CustomMonitorPlugin"]
