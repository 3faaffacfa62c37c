"""py_hook_log test fixture plugin for aiperf."""

from .plugin import PyHookLogPlugin

__all__ = ["PyHookLogPlugin"]
