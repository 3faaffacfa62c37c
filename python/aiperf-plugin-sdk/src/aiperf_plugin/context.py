"""The run a plugin takes part in: ``RunContext`` (protocol v1 ``configure.context``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["LoadContext", "RunContext", "SweepParameters", "SweepPoint"]


def _known(cls: type, data: Mapping[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class LoadContext:
    """How one phase loads the server.

    ``mode`` is ``"concurrency"`` (closed loop), ``"request_rate"`` (open loop) or
    ``"fixed_schedule"`` (a trace's timestamps); ``concurrency`` is the number of workers
    (closed loop) or the cap on requests in flight (open loop); ``arrival_pattern`` is
    ``"poisson"``, ``"constant"`` or ``"gamma"``. Times are in seconds.
    """

    mode: str = ""
    concurrency: Optional[int] = None
    request_rate: Optional[float] = None
    arrival_pattern: Optional[str] = None
    request_count: Optional[int] = None
    conversation_count: Optional[int] = None
    duration_sec: Optional[float] = None
    grace_period_sec: float = 0.0
    concurrency_ramp_sec: Optional[float] = None
    request_rate_ramp_sec: Optional[float] = None

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "LoadContext":
        """Build from the wire object; missing fields take their default, unknown ones are dropped."""
        return cls(**_known(cls, data)) if isinstance(data, Mapping) else cls()


@dataclass
class SweepParameters:
    """The values a sweep point sets (``None`` when the point leaves it to the run)."""

    concurrency: Optional[int] = None
    request_rate: Optional[float] = None
    isl: Optional[int] = None
    osl: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "SweepParameters":
        return cls(**_known(cls, data)) if isinstance(data, Mapping) else cls()


@dataclass
class SweepPoint:
    """Where a run sits in a sweep or in repeated runs (``--num-profile-runs``).

    ``index`` counts the sweep's ``count`` points from 0, ``trial`` the point's ``trials``
    runs from 0.
    """

    index: int = 0
    count: int = 1
    trial: int = 0
    trials: int = 1
    parameters: SweepParameters = field(default_factory=SweepParameters)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> Optional["SweepPoint"]:
        if not isinstance(data, Mapping):
            return None
        fields = _known(cls, data)
        fields["parameters"] = SweepParameters.from_dict(data.get("parameters"))
        return cls(**fields)


@dataclass
class ShardPart:
    """The part of a run split across processes (``--shard I/N``): ``index`` of ``count``
    from 0; in ``aiperf merge``, ``merged`` is true and the hooks see the whole run."""

    index: int = 0
    count: int = 1
    merged: bool = False

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> Optional["ShardPart"]:
        return cls(**_known(cls, data)) if isinstance(data, Mapping) else None


@dataclass
class RunContext:
    """What aiperf tells a plugin about its run (``plugin.context``).

    ``run_id`` is the report's ``benchmark_id``; ``urls`` are the real addresses (the
    built-in mock's too); ``artifact_dir`` is absolute and exists from ``benchmark_start``
    on; ``input_config`` is the resolved config exactly as the report's ``input_config``
    (secrets redacted); ``sweep`` says where the run sits in a sweep or in repeated runs
    (``None`` for a single run); ``shard`` which part of a sharded run this is (``None`` when
    the run is not sharded). Fields a newer aiperf adds are kept in ``extra``.
    """

    run_id: str = ""
    aiperf_version: str = ""
    models: List[str] = field(default_factory=list)
    urls: List[str] = field(default_factory=list)
    endpoint_type: str = ""
    endpoint_path: str = ""
    streaming: bool = False
    artifact_dir: str = ""
    load: LoadContext = field(default_factory=LoadContext)
    warmup: Optional[LoadContext] = None
    input_config: Dict[str, Any] = field(default_factory=dict)
    sweep: Optional[SweepPoint] = None
    shard: Optional[ShardPart] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> Optional["RunContext"]:
        """Build from the wire object; ``None`` when there is none (an older aiperf, ``plugins check``)."""
        if not isinstance(data, Mapping):
            return None
        fields = _known(cls, data)
        fields.pop("extra", None)
        fields["load"] = LoadContext.from_dict(data.get("load"))
        warmup = data.get("warmup")
        fields["warmup"] = LoadContext.from_dict(warmup) if isinstance(warmup, Mapping) else None
        fields["sweep"] = SweepPoint.from_dict(data.get("sweep"))
        fields["shard"] = ShardPart.from_dict(data.get("shard"))
        if not isinstance(fields.get("input_config"), dict):
            fields["input_config"] = {}
        extra = {k: v for k, v in data.items() if k not in {f.name for f in dataclasses.fields(cls)}}
        return cls(**fields, extra=extra)

    @property
    def model(self) -> Optional[str]:
        """The first model, or ``None``."""
        return self.models[0] if self.models else None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict, as on the wire (``extra`` merged back in)."""
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        if data.get("sweep") is None:
            data.pop("sweep", None)
        if data.get("shard") is None:
            data.pop("shard", None)
        return {**extra, **data}
