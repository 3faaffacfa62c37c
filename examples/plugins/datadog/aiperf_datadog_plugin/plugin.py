"""Datadog monitoring plugin for aiperf phases.

Loaded through the ``aiperf.plugins`` entry point ``datadog``. Sends phase metrics to a
DogStatsD agent over UDP and phase events to the Datadog events API, using only the
standard library (no ``datadog`` package needed).

Config (the ``plugins: datadog:`` section of the aiperf config):

- ``api_key``: Datadog API key. Without it the plugin stays disabled (registers nothing).
  Sent only in the ``DD-API-KEY`` header of event posts; never logged.
- ``site``: Datadog site, default ``datadoghq.com``.
- ``tags``: list of ``key:value`` tags (a comma-separated string works too) added to
  every metric and event.
- ``statsd_host`` / ``statsd_port``: DogStatsD agent, default ``127.0.0.1:8125``.
- ``events_url``: where events are POSTed as JSON. Default
  ``https://api.<site>/api/v1/events``; set it to ``""`` or ``null`` to send no events.
- ``metric_prefix``: metric name prefix, default ``aiperf``.
- ``http_timeout``: seconds for one event post, default 2 (well under the hook timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, Iterable, List, Optional

from aiperf_plugin.common.enums import CreditPhase
from aiperf_plugin.timing.phase_hooks import PhaseHookRegistry

logger = logging.getLogger(__name__)

#: Statistics of each summary metric that are sent as gauges on phase_complete.
SUMMARY_STATS = ("avg", "p50", "p90", "p99")

_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]+")
_TAG_BAD = re.compile(r"[,|#\s]+")


def _metric_name(*parts: str) -> str:
    name = ".".join(p.strip(".") for p in parts if p)
    return _METRIC_NAME_BAD.sub("_", name)


def _tag(tag: Any) -> str:
    return _TAG_BAD.sub("_", str(tag).strip())


def _format_value(value: Any) -> Optional[str]:
    """DogStatsD value text, or ``None`` when ``value`` is not a finite number."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return repr(value)
    return None


class DogStatsdClient:
    """Minimal DogStatsD client: one UDP datagram per metric, fire and forget."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: Optional[socket.socket] = None
        self._addr: Any = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock, self._addr = sock, addr
        return self._sock

    @staticmethod
    def format_gauge(name: str, value: Any, tags: Iterable[str] = ()) -> Optional[str]:
        text = _format_value(value)
        if text is None:
            return None
        line = f"{name}:{text}|g"
        tag_list = [_tag(t) for t in tags if str(t).strip()]
        if tag_list:
            line += "|#" + ",".join(tag_list)
        return line

    def gauge(self, name: str, value: Any, tags: Iterable[str] = ()) -> bool:
        """Send a gauge; ``False`` (and nothing sent) when ``value`` is not a number."""
        line = self.format_gauge(name, value, tags)
        if line is None:
            return False
        sock = self._socket()
        sock.sendto(line.encode("utf-8"), self._addr)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DatadogPhasePlugin:
    """Datadog monitoring plugin for aiperf phases.

    Sends a Datadog event when a phase starts, and phase metrics (gauges) plus a
    completion event when a phase completes.
    """

    HOOKS = ["phase_start", "phase_complete"]
    CONFIG_SCHEMA = {
        "type": "object",
        # A key not listed below is a typo: aiperf rejects it with its file:line.
        "additionalProperties": False,
        "properties": {
            "api_key": {"type": ["string", "null"]},
            "site": {"type": "string"},
            "tags": {
                "anyOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "string"},
                ]
            },
            "statsd_host": {"type": "string"},
            "statsd_port": {"type": ["integer", "string"]},
            "events_url": {"type": ["string", "null"]},
            "metric_prefix": {"type": "string"},
            "http_timeout": {"type": "number", "exclusiveMinimum": 0},
        },
    }

    def __init__(self, config: dict):
        """Initialize plugin.

        Args:
            config: Plugin config from the aiperf config file (``plugins: datadog:``).
        """
        config = dict(config or {})
        self.api_key: Optional[str] = config.get("api_key") or None
        self.site: str = config.get("site") or "datadoghq.com"
        self.tags: List[str] = self._parse_tags(config.get("tags"))
        self.statsd_host: str = config.get("statsd_host") or "127.0.0.1"
        self.statsd_port: int = int(config.get("statsd_port") or 8125)
        self.metric_prefix: str = config.get("metric_prefix") or "aiperf"
        if "events_url" in config:
            self.events_url: Optional[str] = config["events_url"] or None
        else:
            self.events_url = f"https://api.{self.site}/api/v1/events"
        self.http_timeout: float = float(config.get("http_timeout") or 2.0)
        self.enabled = self.api_key is not None
        self.statsd: Optional[DogStatsdClient] = None

        if self.enabled:
            self.statsd = DogStatsdClient(self.statsd_host, self.statsd_port)
            logger.info(
                "Datadog plugin initialized (site=%s, statsd=%s:%d, events=%s)",
                self.site,
                self.statsd_host,
                self.statsd_port,
                "on" if self.events_url else "off",
            )
        else:
            logger.warning("Datadog plugin disabled (no api_key)")

    @staticmethod
    def _parse_tags(raw: Any) -> List[str]:
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = raw.split(",")
        return [str(t).strip() for t in raw if str(t).strip()]

    def __repr__(self) -> str:  # never show the api key
        return f"DatadogPhasePlugin(site={self.site!r}, enabled={self.enabled})"

    def register_hooks(self):
        """Register callbacks with aiperf (called right after construction)."""
        if not self.enabled:
            return

        PhaseHookRegistry.register_phase_start(self.on_phase_start)
        PhaseHookRegistry.register_phase_complete(self.on_phase_complete)

        logger.info("Datadog hooks registered")

    async def on_phase_start(self, phase: CreditPhase, tracker):
        """Send phase start event to Datadog."""
        try:
            await self._send_event(
                title=f"AIPerf Phase Started: {phase}",
                text=f"Phase {phase} started",
                tags=self.tags + [f"phase:{phase}", "event:start"],
                alert_type="info",
            )
        except Exception as e:
            logger.error("Failed to send phase start event: %r", e)

    async def on_phase_complete(self, phase: CreditPhase, tracker):
        """Send phase metrics to Datadog."""
        try:
            stats = tracker.create_stats()
            tags = self.tags + [f"phase:{phase}"]

            self._gauge("phase.duration", stats.duration_sec, tags)
            self._gauge("phase.requests.sent", stats.sent, tags)
            self._gauge("phase.requests.completed", stats.completed, tags)
            self._gauge("phase.requests.errors", stats.errors, tags)
            self._gauge("phase.requests.cancelled", stats.cancelled, tags)
            self._send_summary(tracker.summary, tags)

            duration = stats.duration_sec if isinstance(stats.duration_sec, (int, float)) else 0.0
            await self._send_event(
                title=f"AIPerf Phase Complete: {phase}",
                text=f"Phase {phase} completed: {stats.sent} requests in {duration:.2f}s",
                tags=self.tags + [f"phase:{phase}", "event:complete"],
                alert_type="success",
            )

        except Exception as e:
            logger.error("Failed to send phase metrics: %r", e)

    # -- helpers ---------------------------------------------------------------------------

    def _gauge(self, name: str, value: Any, tags: List[str]) -> None:
        if self.statsd is not None:
            self.statsd.gauge(_metric_name(self.metric_prefix, name), value, tags)

    def _send_summary(self, summary: Optional[Dict[str, Any]], tags: List[str]) -> None:
        """One gauge per (metric, statistic) of the phase's metric summary."""
        if not isinstance(summary, dict):
            return
        for metric, values in summary.items():
            if not isinstance(values, dict):
                continue
            for stat in SUMMARY_STATS:
                if stat in values:
                    self._gauge(f"metric.{metric}.{stat}", values[stat], tags)

    async def _send_event(self, title: str, text: str, tags: List[str], alert_type: str) -> None:
        if not self.events_url:
            return
        body = {
            "title": title,
            "text": text,
            "tags": tags,
            "alert_type": alert_type,
            "source_type_name": "aiperf",
        }
        # urllib blocks: keep it off the event loop.
        await asyncio.to_thread(self._post_json, self.events_url, body)

    def _post_json(self, url: str, body: Dict[str, Any]) -> int:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "DD-API-KEY": self.api_key or "",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as e:
            # Do not let the request (and its headers) travel in the exception.
            raise RuntimeError(f"Datadog events API answered HTTP {e.code} {e.reason}") from None
