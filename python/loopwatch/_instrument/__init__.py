"""Zero-code instrumentation of known frameworks (OpenEvolve, ShinkaEvolve, Optuna,
DEAP, Nevergrad), installed by ``loopwatch/_auto/sitecustomize.py``.

When a framework's trigger module has been imported, :func:`loaded` decides once per
framework whether to instrument it: selected (``LOOPWATCH_INSTRUMENT``), a passing
test behind it (or named explicitly), its installed version inside the tested range,
and every hook point of the hook set present, in every trigger module of the
framework (:data:`GROUPS`: DEAP's ``deap.tools`` and ``deap.algorithms``). Then it
patches the hook points, all of them or none. Otherwise it logs one line naming the
framework and its version and leaves the loop untouched.

Rules every instrumentation here keeps:

* **Never raises into the loop.** The framework's own code runs exactly as before;
  what the instrumentation adds runs under :func:`safely`, which catches an exception,
  counts it (``loopwatch_instrumentation_errors_total{framework}``) and logs the
  first one of each framework.
* **Reports only from the process that owns the search** (:func:`owns_search`): the
  first process of the run that reports claims it (``LOOPWATCH_INSTRUMENT_OWNER``,
  inherited by the processes it starts), so a framework's worker pool, or a
  framework used inside an evaluated program, reports nothing.
* **Never counts twice** (:func:`stood_down`): once the loop reports iterations itself,
  through ``loopwatch.iteration()`` or an adapter, in any process of the run, the
  instrumentation reports no more.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from . import _report

__all__ = [
    "FRAMEWORKS",
    "Framework",
    "MissingHookPoint",
    "Patch",
    "errors",
    "loaded",
    "owns_search",
    "reporting",
    "safely",
    "state",
    "stood_down",
]

log = logging.getLogger("loopwatch.instrument")

#: Set by the first process of the run that reports through an instrumentation, to
#: its pid; inherited by every process it starts after that.
ENV_OWNER = "LOOPWATCH_INSTRUMENT_OWNER"
#: Each decision said (logged and announced) so far in the run, ``name=state:version``
#: comma-separated: set by the process that said it, inherited by the processes it
#: starts after, which do not say the same decision again (a framework left alone is
#: one log line, not one per worker).
ENV_SAID = "LOOPWATCH_INSTRUMENT_SAID"
#: Created beside ``LOOPWATCH_SOCKET`` by the first iteration a loop reports itself,
#: so that the instrumentation of every process of the run stands down.
MANUAL_MARKER = "instrument-manual"

Version = Tuple[int, ...]


@dataclass(frozen=True)
class Framework:
    """A framework the instrumentation knows."""

    #: The name ``LOOPWATCH_INSTRUMENT`` and the protocol use.
    name: str
    #: The distribution whose version is checked.
    distribution: str
    #: Lowest version instrumented (inclusive).
    minimum: Version
    #: First version not instrumented (exclusive).
    below: Version
    #: The version the tests run against.
    tested: str
    #: Whether ``auto`` instruments it: only frameworks with a passing test.
    auto: bool = True

    def range_text(self) -> str:
        """The range as pip writes it: ``>=5.1,<5.2``."""
        return ">=%s,<%s" % (".".join(map(str, self.minimum)), ".".join(map(str, self.below)))


#: Every framework, with its tested range: the minor version of the version the tests
#: run against (scripts/lib/services.sh pins it), for a 0.x version its patch version
#: (0.x minor releases may break anything). docs/frameworks.md states the same.
FRAMEWORKS: Dict[str, Framework] = {
    f.name: f
    for f in (
        Framework("openevolve", "openevolve", (0, 4, 1), (0, 4, 2), "0.4.1"),
        Framework("shinka", "shinka-evolve", (0, 0, 7), (0, 0, 8), "0.0.7"),
        Framework("optuna", "optuna", (5, 1), (5, 2), "5.1.0"),
        Framework("deap", "deap", (1, 4), (1, 5), "1.4.4"),
        Framework("nevergrad", "nevergrad", (1, 0), (1, 1), "1.0.12"),
    )
}


class MissingHookPoint(Exception):
    """A hook point the installed version does not have."""


@dataclass
class Patch:
    """One attribute replaced: ``setattr(owner, name, replacement)``."""

    owner: Any
    name: str
    replacement: Any
    original: Any = None


def hook_point(owner: Any, dotted: str) -> Any:
    """``owner.a.b`` for ``dotted`` ``"a.b"``, or :class:`MissingHookPoint`."""
    value = owner
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise MissingHookPoint(dotted) from None
    return value


# --- errors ------------------------------------------------------------------------

_errors: Dict[str, int] = {}
_errors_lock = threading.Lock()


def failed(framework: str, error: BaseException) -> None:
    """Counts an exception caught inside ``framework``'s instrumentation; logs the first."""
    with _errors_lock:
        count = _errors.get(framework, 0) + 1
        _errors[framework] = count
    if count == 1:
        log.warning(
            "loopwatch: the %s instrumentation failed (%s: %s); the loop goes on, further "
            "errors are counted in loopwatch_instrumentation_errors_total",
            framework,
            type(error).__name__,
            error,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
    _report.error(framework)


def errors() -> Dict[str, int]:
    """Errors caught so far in this process, per framework."""
    with _errors_lock:
        return dict(_errors)


T = TypeVar("T")


def safely(framework: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
    """``fn(*args, **kwargs)``, or None when it raised (counted and logged)."""
    try:
        with reporting():
            return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - instrumentation never reaches the loop
        try:
            failed(framework, error)
        except Exception:  # noqa: BLE001
            pass
        return None


# --- who reports ---------------------------------------------------------------------

_local = threading.local()


class _Reporting:
    """While entered, client calls on this thread are the instrumentation's own."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


def reporting() -> _Reporting:
    """A context in which ``loopwatch.iteration()`` is the instrumentation's, not the loop's."""
    return _Reporting()


def _inside() -> bool:
    return getattr(_local, "depth", 0) > 0


def owns_search(framework: str) -> bool:
    """Whether this process reports the search: the first process of the run to ask
    claims it for itself and every process it starts from then on."""
    pid = str(os.getpid())
    owner = os.environ.get(ENV_OWNER)
    if not owner:
        os.environ[ENV_OWNER] = pid
        return True
    if owner == pid:
        return True
    _once("owner:" + framework, logging.INFO, "loopwatch: %s in process %s reports nothing: process %s reports the search", framework, pid, owner)
    return False


_manual = False


def _marker() -> Optional[str]:
    path = os.environ.get(_report.ENV_SOCKET)
    return os.path.join(os.path.dirname(path), MANUAL_MARKER) if path else None


def _mark_manual() -> None:
    global _manual
    if _manual:
        return
    _manual = True
    marker = _marker()
    if marker is not None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            pass


def stood_down(framework: str) -> bool:
    """Whether the loop reports its own iterations (in this or another process of the
    run): then the instrumentation reports none."""
    global _manual
    if not _manual:
        marker = _marker()
        if marker is None or not os.path.exists(marker):
            return False
        _manual = True
    _once(
        "manual:" + framework,
        logging.INFO,
        "loopwatch: the loop reports its own iterations: the %s instrumentation reports none",
        framework,
    )
    return True


_logged: Dict[str, bool] = {}


def _once(key: str, level: int, message: str, *args: Any) -> None:
    if key not in _logged:
        _logged[key] = True
        log.log(level, message, *args)


# --- deciding and patching --------------------------------------------------------------

#: A framework's decision: None while undecided, else (instrumented, version).
_decisions: Dict[str, Tuple[bool, str]] = {}
_applied: List[Patch] = []
#: Set on a trigger module once its hook points are patched, by any copy of this
#: package in the process (a nested run's and an outer one's): patched once only.
PATCHED = "__loopwatch_instrumented__"
_marked: List[Any] = []
_decide_lock = threading.RLock()


def parse_version(text: str) -> Optional[Version]:
    """The leading release numbers of a version string: ``"1.4.4rc1"`` → ``(1, 4, 4)``."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _announce(framework: str, version: str, state: str, reason: Optional[str] = None) -> None:
    """Tells the supervisor, unless another process of the run owns the search (a
    worker, an evaluated program: the owner has said it)."""
    owner = os.environ.get(ENV_OWNER)
    if owner and owner != str(os.getpid()):
        return
    _report.instrumented(framework, version, state, reason)


def _installed_version(framework: Framework, module: Any) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(framework.distribution)
    except Exception:  # noqa: BLE001 - no metadata (a source checkout)
        top = module.__name__.split(".")[0] if isinstance(module, ModuleType) else framework.name
        found = getattr(sys.modules.get(top), "__version__", None)
        return str(found) if found is not None else None


def in_range(framework: Framework, version: Version) -> bool:
    """Whether ``version`` is inside the framework's tested range."""
    n = max(len(version), len(framework.minimum), len(framework.below))

    def pad(v: Version) -> Version:
        return v + (0,) * (n - len(v))

    return pad(framework.minimum) <= pad(version) < pad(framework.below)


def _first_to_say(framework: str, state: str, version: str) -> bool:
    """Whether this process is the first of the run to reach this decision (and
    notes it for the processes it starts): only the first logs and announces it."""
    entry = "%s=%s:%s" % (framework, state, version.replace(",", " "))
    said = [e for e in os.environ.get(ENV_SAID, "").split(",") if e]
    if entry in said:
        return False
    os.environ[ENV_SAID] = ",".join(said + [entry])
    return True


def _decide(framework: Framework, module: Any, auto: bool, explicit: bool) -> Optional[str]:
    """The installed version when ``framework`` may be instrumented, else None (logged,
    by the first process of the run that decides so)."""
    if not explicit and not (auto and framework.auto):
        if _first_to_say(framework.name, "off", ""):
            _once(
                "off:" + framework.name,
                logging.INFO,
                "loopwatch: %s is not instrumented under auto (name it in LOOPWATCH_INSTRUMENT to try it)",
                framework.name,
            )
            _announce(framework.name, "", "off", "not instrumented under auto")
        return None
    text = _installed_version(framework, module)
    version = parse_version(text) if text else None
    if version is None or not in_range(framework, version):
        reason = "version outside the tested range %s" % framework.range_text()
        if _first_to_say(framework.name, "skipped", text or ""):
            log.warning(
                "loopwatch: %s %s is not instrumented (%s); the loop runs as it is",
                framework.name,
                text or "(version unknown)",
                reason,
            )
            _announce(framework.name, text or "", "skipped", reason)
        return None
    return text


#: Frameworks whose hook points lie in several trigger modules: decided and patched
#: together (all of them or none), once every one of those modules has been imported.
GROUPS: Dict[str, Tuple[str, ...]] = {"deap": ("deap.tools", "deap.algorithms")}


def _initializing(module: Any) -> bool:
    """Whether ``module`` is still being executed (an import in progress)."""
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _group(framework: str, trigger: str, module: Any) -> Optional[Dict[str, Any]]:
    """Every trigger module of ``framework`` → the module (one not imported yet is
    imported now), or None while another one is being imported: its own trigger,
    once it has run, completes the group."""
    found: Dict[str, Any] = {}
    for name in GROUPS.get(framework, (trigger,)):
        if name == trigger:
            found[name] = module
            continue
        other = sys.modules.get(name)
        if other is None:
            import importlib

            try:
                other = importlib.import_module(name)
            except ImportError:
                raise MissingHookPoint(name) from None
        elif _initializing(other):
            return None
        found[name] = other
    return found


def loaded(framework_name: str, trigger: str, module: Any, auto: bool, explicit: bool) -> None:
    """Called by the import hook once ``trigger`` (a module of ``framework_name``) ran."""
    if framework_name == "loopwatch":
        safely("loopwatch", _watch_client, module)
        return
    framework = FRAMEWORKS[framework_name]
    with _decide_lock:
        if getattr(module, PATCHED, False):
            return
        decision = _decisions.get(framework.name)
        if decision is None:
            version = _decide(framework, module, auto, explicit)
            decision = (version is not None, version or "")
            _decisions[framework.name] = decision
        instrumented, version_text = decision
        if not instrumented:
            return
        try:
            group = _group(framework.name, trigger, module)
            if group is None:
                return
            # Every hook point of every module of the framework looked up before any
            # is patched: all of them, or none.
            patches: List[Patch] = []
            for name, member in group.items():
                plan = HOOKS.get(name)
                if plan is not None and not getattr(member, PATCHED, False):
                    patches.extend(plan(member))
        except MissingHookPoint as missing:
            if _first_to_say(framework.name, "missing", version_text):
                log.warning(
                    "loopwatch: %s %s is not instrumented: its hook point %s is missing; the loop runs as it is",
                    framework.name,
                    version_text,
                    missing,
                )
                _announce(framework.name, version_text, "skipped", "hook point %s is missing" % missing)
            _decisions[framework.name] = (False, version_text)
            return
        except Exception as error:  # noqa: BLE001
            failed(framework.name, error)
            return
        if not _decisions.get(framework.name, (False, ""))[0]:
            return  # decided against while the group was imported
        for patch in patches:
            patch.original = getattr(patch.owner, patch.name)
        for patch in patches:
            setattr(patch.owner, patch.name, patch.replacement)
            _applied.append(patch)
        for member in group.values():
            try:
                setattr(member, PATCHED, True)
                _marked.append(member)
            except (AttributeError, TypeError):
                pass
        if patches and _first_to_say(framework.name, "active", version_text):
            log.info("loopwatch: instrumenting %s %s", framework.name, version_text)
            _announce(framework.name, version_text, "active")


def undo() -> None:
    """Restores every patched attribute (for tests)."""
    with _decide_lock:
        while _applied:
            patch = _applied.pop()
            setattr(patch.owner, patch.name, patch.original)
        while _marked:
            try:
                delattr(_marked.pop(), PATCHED)
            except AttributeError:
                pass
        _decisions.clear()
        os.environ.pop(ENV_SAID, None)


def state() -> Dict[str, Tuple[bool, str]]:
    """Each framework decided so far: (instrumented, version)."""
    return dict(_decisions)


def _watch_client(module: Any) -> None:
    """Marks the loop as reporting by itself at its first ``loopwatch.iteration()``."""
    cls = module.Iteration
    original = cls.__init__
    if getattr(original, "_loopwatch_watch", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _inside():
            try:
                _mark_manual()
            except Exception:  # noqa: BLE001
                pass
        original(self, *args, **kwargs)

    __init__._loopwatch_watch = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def wrap_method(
    framework: str,
    original: Callable[..., Any],
    before: Optional[Callable[..., Any]] = None,
    after: Optional[Callable[..., Any]] = None,
) -> Callable[..., Any]:
    """``original`` with ``before(*args, **kwargs)`` run ahead of it and
    ``after(result, *args, **kwargs)`` once it returned, both under :func:`safely`;
    ``before`` may return replacement ``(args, kwargs)``. The original's own
    exceptions pass through unchanged."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            changed = safely(framework, before, *args, **kwargs)
            if changed is not None:
                args, kwargs = changed
        result = original(*args, **kwargs)
        if after is not None:
            safely(framework, after, result, *args, **kwargs)
        return result

    return wrapper


def _hooks() -> Dict[str, Callable[[Any], List[Patch]]]:
    from . import deap_hooks, nevergrad_hooks, openevolve_hooks, optuna_hooks, shinka_hooks

    return {
        "openevolve": openevolve_hooks.plan,
        "optuna": optuna_hooks.plan,
        "deap.tools": deap_hooks.plan_tools,
        "deap.algorithms": deap_hooks.plan_algorithms,
        "nevergrad": nevergrad_hooks.plan,
        "shinka.core": shinka_hooks.plan,
    }


class _LazyHooks:
    """The hook plans by trigger module, imported on first use."""

    _table: Optional[Dict[str, Callable[[Any], List[Patch]]]] = None

    def get(self, trigger: str) -> Optional[Callable[[Any], List[Patch]]]:
        if self._table is None:
            self._table = _hooks()
        return self._table.get(trigger)

    def keys(self) -> Iterator[str]:
        if self._table is None:
            self._table = _hooks()
        return iter(self._table)


#: Trigger module → the function that looks up its hook points and returns the patches.
HOOKS = _LazyHooks()
