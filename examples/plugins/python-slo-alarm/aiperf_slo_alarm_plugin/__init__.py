"""slo_alarm example plugin for aiperf."""

from .plugin import SloAlarmPlugin, violates

__all__ = ["SloAlarmPlugin", "violates"]
