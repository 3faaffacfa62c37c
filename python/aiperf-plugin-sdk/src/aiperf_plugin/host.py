"""``aiperf-plugin-python``: serves one Python plugin over aiperf plugin protocol v1.

Usage::

    aiperf-plugin-python --list            # JSON list of installed plugins (nothing imported)
    aiperf-plugin-python --plugin NAME     # serve entry point NAME on stdin/stdout

aiperf starts one process per configured Python plugin, so a slow plugin never stalls
another one. stdout carries protocol messages only: before any plugin code runs, the
host moves its protocol channel to a private file descriptor and points file descriptor 1
and ``sys.stdout`` at stderr, so ``print()`` (and child processes) in plugin code end up in
the log, never in the protocol. stdin is likewise taken private and replaced by
``/dev/null``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

from . import __version__
from .context import RunContext
from .discovery import ENTRY_POINT_GROUP, find_plugin, iter_plugins, list_plugins
from .phase_hooks import HOOK_NAMES, LIFECYCLE_HOOKS, PHASE_HOOKS, PhaseHookRegistry
from .reporting import Report, _set_sink, report_from_return
from .tracker import PhaseTracker

__all__ = ["main", "PROTOCOL_VERSION", "MAX_LINE_BYTES"]

PROTOCOL_VERSION = 1
SUPPORTED_PROTOCOL_VERSIONS = (PROTOCOL_VERSION,)
#: Lines longer than this are garbage (protocol v1: 16 MiB).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: After ``shutdown``/EOF, how long events that were already received may still run.
DEFAULT_SHUTDOWN_GRACE_SEC = 1.0

logger = logging.getLogger("aiperf_plugin.host")

_EOF = object()


# --------------------------------------------------------------------------------------
# stdio
# --------------------------------------------------------------------------------------


class _Channel:
    """The protocol's two file descriptors, private to the host."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self._out = os.fdopen(out_fd, "wb")
        self._lock = threading.Lock()
        self.broken = False

    @classmethod
    def take_over_stdio(cls) -> "_Channel":
        """Move the protocol to private fds; fd 0 becomes /dev/null, fd 1 becomes stderr."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        out_fd = os.dup(1)  # os.dup fds are non-inheritable: child processes never see them
        in_fd = os.dup(0)
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(devnull, 0)
        finally:
            os.close(devnull)
        sys.stdout = sys.stderr
        return cls(in_fd, out_fd)

    def send(self, message: Dict[str, Any]) -> bool:
        """Write one message line; ``False`` when the host has gone away."""
        try:
            line = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            logger.error("cannot encode %s message: %r", message.get("type"), exc)
            line = json.dumps(
                {"type": "error", "message": f"cannot encode {message.get('type')} message: {exc!r}"}
            )
        data = line.encode("utf-8") + b"\n"
        with self._lock:
            if self.broken:
                return False
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                self.broken = True
                logger.debug("protocol output closed: %r", exc)
                return False
        return True


def _read_lines(fd: int, deliver: Callable[[Any], None]) -> None:
    """Reader thread: split fd into lines (bytes) and ``deliver`` them, then ``_EOF``.

    Uses ``os.read`` rather than a buffered file so that no io lock is held while blocked
    (a daemon thread holding ``sys.stdin``'s lock can abort interpreter shutdown).
    """
    buf = bytearray()
    discarding = False
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as exc:
                logger.debug("stdin read failed: %r", exc)
                chunk = b""
            if not chunk:
                if buf and not discarding:
                    deliver(bytes(buf))
                break
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    if not discarding:
                        buf += chunk[start:]
                        if len(buf) > MAX_LINE_BYTES:
                            logger.warning("ignoring input line longer than %d bytes", MAX_LINE_BYTES)
                            buf.clear()
                            discarding = True
                    break
                if discarding:
                    discarding = False
                else:
                    buf += chunk[start:newline]
                    if len(buf) > MAX_LINE_BYTES:
                        logger.warning("ignoring input line longer than %d bytes", MAX_LINE_BYTES)
                    else:
                        deliver(bytes(buf))
                buf.clear()
                start = newline + 1
    finally:
        deliver(_EOF)


def _decode(line: bytes) -> Optional[Dict[str, Any]]:
    """A message dict, or ``None`` (after logging) for blank lines and garbage."""
    if not line.strip():
        return None
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        logger.warning("ignoring input line that is not JSON: %r", exc)
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        logger.warning("ignoring input line that is not a message object")
        return None
    return message


def _accepts_context(factory: Any) -> bool:
    """Whether ``factory(config, context=...)`` is allowed (a ``context`` or ``**kwargs`` parameter)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "context" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        or p.kind == p.VAR_KEYWORD
        for p in params
    )


def _set_context(instance: Any, context: Optional[RunContext]) -> None:
    """``instance.context = context``, unless the object cannot take the attribute."""
    try:
        setattr(instance, "context", context)
    except (AttributeError, TypeError):
        logger.debug("cannot set %s.context", type(instance).__name__)


def _describe(exc: BaseException) -> str:
    return repr(exc)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))


# --------------------------------------------------------------------------------------
# one plugin session
# --------------------------------------------------------------------------------------


class _Session:
    def __init__(self, channel: _Channel, requested_name: Optional[str], grace_sec: float) -> None:
        self.channel = channel
        self.requested_name = requested_name
        self.grace_sec = grace_sec
        self.name: Optional[str] = None
        self.dist_version: Optional[str] = None
        self.plugin_obj: Any = None
        self.instance: Any = None
        self.hooks: List[str] = list(LIFECYCLE_HOOKS)
        self.configured = False
        # report(): sent at once while configured, else held until `configured` is sent.
        self._report_lock = threading.Lock()
        self._pending_reports: List[Report] = []
        self.context: Optional[RunContext] = None
        self._sync_running = 0
        self._sync_lock = threading.Lock()
        self.inbox: "asyncio.Queue[Any]"
        self.events: "asyncio.Queue[Dict[str, Any]]"

    # -- plumbing ------------------------------------------------------------------------

    def send(self, message: Dict[str, Any]) -> None:
        if not self.channel.send(message):
            # The host closed our stdout: nothing left to talk to.
            self.inbox.put_nowait(_EOF)

    def send_error(self, text: str) -> None:
        logger.error("%s", text)
        self.send({"type": "error", "message": text})

    @property
    def sync_callbacks_running(self) -> int:
        with self._sync_lock:
            return self._sync_running

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        self.events = asyncio.Queue()

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(self.inbox.put_nowait, item)
            except RuntimeError:  # loop already closed: we are exiting anyway
                pass

        reader = threading.Thread(
            target=_read_lines, args=(self.channel.in_fd, deliver), name="aiperf-plugin-stdin", daemon=True
        )
        reader.start()
        worker = asyncio.ensure_future(self._event_worker())
        _set_sink(self._on_report)

        exit_code = 0
        while True:
            item = await self.inbox.get()
            if item is _EOF:
                logger.debug("stdin closed")
                break
            message = _decode(item)
            if message is None:
                continue
            kind = message["type"]
            if kind == "hello":
                code = await self._on_hello(message)
                if code is not None:
                    exit_code = code
                    break
            elif kind == "configure":
                await self.events.join()  # never reconfigure under a running event
                await self._on_configure(message)
            elif kind == "event":
                self.events.put_nowait(message)
            elif kind == "shutdown":
                logger.debug("shutdown requested")
                break
            else:
                logger.debug("ignoring unknown message type %r", kind)

        await self._drain(worker)
        _set_sink(None)
        return exit_code

    # -- reports -----------------------------------------------------------------------------

    def _on_report(self, rep: Report) -> None:
        """The sink of ``aiperf_plugin.report()``; may run on any thread."""
        with self._report_lock:
            if not self.configured:
                self._pending_reports.append(rep)
                return
            self.channel.send(rep.to_message())

    async def _drain(self, worker: "asyncio.Future[Any]") -> None:
        """Let already-received events finish (bounded by the grace period), then stop."""
        if not self.channel.broken:
            try:
                await asyncio.wait_for(self.events.join(), timeout=self.grace_sec)
            except asyncio.TimeoutError:
                logger.warning(
                    "plugin callbacks still running %.1fs after shutdown; exiting anyway", self.grace_sec
                )
        worker.cancel()
        try:
            await worker
        except BaseException:  # cancelled (or died): nothing more to do
            pass

    # -- hello / handshake -----------------------------------------------------------------

    async def _on_hello(self, message: Dict[str, Any]) -> Optional[int]:
        if self.plugin_obj is not None:
            logger.warning("ignoring repeated hello")
            return None
        offered = message.get("protocol_versions")
        versions = (
            [v for v in offered if isinstance(v, int) and not isinstance(v, bool)]
            if isinstance(offered, list)
            else []
        )
        chosen = max((v for v in versions if v in SUPPORTED_PROTOCOL_VERSIONS), default=None)
        if chosen is None:
            self.send_error(
                f"protocol version mismatch: host offers {offered!r}, aiperf-plugin-python "
                f"{__version__} speaks {list(SUPPORTED_PROTOCOL_VERSIONS)!r}"
            )
            return 1

        hello_name = message.get("plugin_name")
        if self.requested_name is not None:
            if hello_name is not None and hello_name != self.requested_name:
                self.send_error(
                    f"plugin name mismatch: started with --plugin {self.requested_name!r} "
                    f"but hello names {hello_name!r}"
                )
                return 1
            name = self.requested_name
        elif isinstance(hello_name, str) and hello_name:
            name = hello_name
        else:
            self.send_error("no plugin to serve: pass --plugin NAME or set plugin_name in hello")
            return 1

        entry = find_plugin(name)
        if entry is None:
            installed = sorted({e.name for e in iter_plugins()})
            self.send_error(
                f"no entry point named {name!r} in group {ENTRY_POINT_GROUP!r} "
                f"(installed: {', '.join(installed) if installed else 'none'})"
            )
            return 1
        try:
            plugin_obj = entry.load()
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            logger.exception("loading plugin %r (%s) failed", name, entry.value)
            self.send_error(f"failed to load plugin {name!r} ({entry.value}): {_describe(exc)}")
            return 1

        hooks = getattr(plugin_obj, "HOOKS", None)
        if hooks is not None:
            if isinstance(hooks, str) or not all(isinstance(h, str) for h in hooks):
                self.send_error(f"plugin {name!r}: HOOKS must be a list of hook names, got {hooks!r}")
                return 1
            unknown = [h for h in hooks if h not in HOOK_NAMES]
            if unknown:
                self.send_error(
                    f"plugin {name!r}: unknown hook(s) in HOOKS: {', '.join(unknown)} "
                    f"(known: {', '.join(HOOK_NAMES)})"
                )
                return 1
            self.hooks = [h for h in HOOK_NAMES if h in hooks]
        schema = getattr(plugin_obj, "CONFIG_SCHEMA", None)
        if schema is not None and not isinstance(schema, dict):
            self.send_error(f"plugin {name!r}: CONFIG_SCHEMA must be a dict, got {type(schema).__name__}")
            return 1

        self.name = name
        self.dist_version = entry.dist_version
        self.plugin_obj = plugin_obj
        handshake: Dict[str, Any] = {
            "type": "handshake",
            "protocol_version": chosen,
            "name": name,
            "version": entry.dist_version or str(getattr(plugin_obj, "__version__", "0.0.0")),
            "hooks": list(self.hooks),
        }
        if schema is not None:
            handshake["config_schema"] = schema
        logger.debug("serving plugin %r from %s (%s %s)", name, entry.value, entry.dist, entry.dist_version)
        self.send(handshake)
        return None

    # -- configure -------------------------------------------------------------------------

    async def _on_configure(self, message: Dict[str, Any]) -> None:
        if self.plugin_obj is None:
            self.send_error("configure received before a successful hello")
            return
        config = message.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.send_error(f"config must be a JSON object, got {type(config).__name__}")
            return
        with self._report_lock:
            self.configured = False
        self.instance = None
        self.context = RunContext.from_dict(message.get("context"))
        PhaseHookRegistry.clear()
        try:
            if _accepts_context(self.plugin_obj):
                instance = self.plugin_obj(config, context=self.context)
            else:
                instance = self.plugin_obj(config)
            _set_context(instance, self.context)
            register = getattr(instance, "register_hooks", None)
            if register is None:
                raise TypeError(f"{type(instance).__name__} has no register_hooks() method")
            result = register()
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            PhaseHookRegistry.clear()
            with self._report_lock:
                dropped, self._pending_reports = len(self._pending_reports), []
            if dropped:
                logger.warning("dropping %d report(s) made while the plugin failed to initialise", dropped)
            logger.exception("plugin %r failed to initialise", self.name)
            self.send_error(f"plugin {self.name!r} failed to initialise: {_describe(exc)}")
            return
        ignored = [h for h in PhaseHookRegistry.registered_hooks() if h not in self.hooks]
        if ignored:
            logger.warning(
                "plugin %r registered callbacks for %s, which its HOOKS do not list; they never fire",
                self.name,
                ", ".join(ignored),
            )
        self.instance = instance
        self.send({"type": "configured"})
        with self._report_lock:
            self.configured = True
            pending, self._pending_reports = self._pending_reports, []
            for rep in pending:
                self.channel.send(rep.to_message())

    # -- events ----------------------------------------------------------------------------

    async def _event_worker(self) -> None:
        while True:
            message = await self.events.get()
            try:
                ack = await self._handle_event(message)
            except asyncio.CancelledError:
                self.events.task_done()
                raise
            except BaseException as exc:  # defensive: never leave an event unanswered
                if isinstance(exc, KeyboardInterrupt):
                    raise
                logger.exception("internal error handling event %r", message.get("id"))
                ack = {"type": "ack", "id": message.get("id"), "error": f"aiperf-plugin-python: {exc!r}"}
            self.send(ack)
            self.events.task_done()

    async def _handle_event(self, message: Dict[str, Any]) -> Dict[str, Any]:
        ack: Dict[str, Any] = {"type": "ack", "id": message.get("id")}
        if not self.configured:
            ack["error"] = "plugin is not configured"
            return ack
        hook = message.get("hook")
        if hook not in HOOK_NAMES:
            logger.debug("no callbacks for unknown hook %r", hook)
            return ack
        callbacks = PhaseHookRegistry.get_callbacks(hook)
        if not callbacks:
            return ack
        tracker = PhaseTracker.from_event(message)
        if tracker.context is not None:
            self.context = tracker.context
            _set_context(self.instance, tracker.context)
        args = (tracker.phase, tracker) if hook in PHASE_HOOKS else (tracker,)
        errors: List[str] = []
        for callback in callbacks:
            try:
                result = await self._invoke(callback, args)
            except BaseException as exc:
                if _is_fatal(exc):
                    raise
                logger.error(
                    "%s callback %s failed", hook, getattr(callback, "__qualname__", callback), exc_info=exc
                )
                errors.append(_describe(exc))
                continue
            self._send_returned_report(hook, callback, result)
        if errors:
            ack["error"] = "; ".join(errors)
        return ack

    def _send_returned_report(self, hook: str, callback: Callable[..., Any], result: Any) -> None:
        """A callback's return value, when it is a report: checked, then sent (before the ack)."""
        rep, problems = report_from_return(result)
        for why in problems:
            logger.error(
                "%s callback %s returned a bad report: %s; left out",
                hook,
                getattr(callback, "__qualname__", callback),
                why,
            )
        if rep is not None and not rep.is_empty():
            self._on_report(rep)

    async def _invoke(self, callback: Callable[..., Any], args: tuple) -> Any:
        if inspect.iscoroutinefunction(callback) or asyncio.iscoroutinefunction(callback):
            return await callback(*args)
        # Plain function: run it in a worker thread so that a blocking callback cannot
        # freeze the protocol loop (it can still read shutdown/EOF and exit).
        result = await asyncio.to_thread(self._call_sync, callback, args)
        if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
            result = await result
        return result

    def _call_sync(self, callback: Callable[..., Any], args: tuple) -> Any:
        with self._sync_lock:
            self._sync_running += 1
        try:
            return callback(*args)
        finally:
            with self._sync_lock:
                self._sync_running -= 1


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def _configure_logging() -> None:
    level_name = os.environ.get("AIPERF_PLUGIN_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _grace_from_env() -> float:
    raw = os.environ.get("AIPERF_PLUGIN_SHUTDOWN_GRACE")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    return DEFAULT_SHUTDOWN_GRACE_SEC


def serve(plugin_name: Optional[str]) -> int:
    """Serve ``plugin_name`` (or the hello's ``plugin_name``) until shutdown/EOF."""
    channel = _Channel.take_over_stdio()
    _configure_logging()
    session = _Session(channel, plugin_name, _grace_from_env())
    loop = asyncio.new_event_loop()
    exit_code = 0
    try:
        asyncio.set_event_loop(loop)
        exit_code = loop.run_until_complete(session.run())
    except KeyboardInterrupt:
        exit_code = 130
    finally:
        if session.sync_callbacks_running:
            # A blocking plugin callback is still running in a worker thread: waiting for
            # it would hang the exit (the host kills us after 2 s). Leave right now.
            logger.warning("exiting while a plugin callback is still running")
            _flush_std_streams()
            os._exit(exit_code)
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return exit_code


def _list_main() -> int:
    payload = {"plugins": [entry.to_dict() for entry in list_plugins()]}
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aiperf-plugin-python",
        description=(
            "Serve one Python aiperf plugin (entry point group "
            f"{ENTRY_POINT_GROUP!r}) over the aiperf plugin protocol v1 on stdin/stdout."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--list",
        action="store_true",
        help="print the installed plugins as one JSON object and exit (imports nothing)",
    )
    mode.add_argument(
        "--plugin",
        metavar="NAME",
        help="entry point to serve (default: the plugin_name of the host's hello)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.list:
        return _list_main()
    return serve(args.plugin)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
