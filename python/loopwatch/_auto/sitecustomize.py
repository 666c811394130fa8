"""loopwatch's zero-code instrumentation: the ``sitecustomize`` of a Python child of
``loopwatch run --instrument``.

``loopwatch run`` puts this directory on the child's ``PYTHONPATH``; Python imports
this module at start-up (``site``). It

1. runs the ``sitecustomize`` that would have run without it (the next one on
   ``sys.path``), so a site's or a virtual environment's own stays in force; another
   copy of this one (an outer ``loopwatch run``'s, under a nested run) is passed over,
   as is a second install in the same process: one import hook per process;
2. when the child reports to a supervisor (``LOOPWATCH_SOCKET`` is set) and
   ``LOOPWATCH_INSTRUMENT`` is not ``none``, installs an import hook: a
   ``sys.meta_path`` finder that answers for nothing but the few modules listed in
   :data:`TRIGGERS` (and ``loopwatch``). When one of them has been executed, the hook
   hands it to :mod:`loopwatch._instrument`, which checks the framework's version and
   patches its documented hook points. A child that imports none of them pays for one
   dictionary look-up per import, and this module imports nothing that Python has not
   already imported at start-up.

``import loopwatch`` gets the package this directory ships in (the client that matches
the supervisor) when the child has no other ``loopwatch`` on ``sys.path``, or one of the
same version; a different ``loopwatch`` the child has (pip-installed, or on its own
path) is the one it gets, and the instrumentation runs from it.

``LOOPWATCH_INSTRUMENT``: ``auto`` (or unset) instruments every framework whose
installed version is inside its tested range, the minor version the tests pass at (a
0.x version's patch version: ``loopwatch._instrument.FRAMEWORKS``); ``none`` nothing;
a comma-separated list (``optuna,deap``) those frameworks only, including one that
``auto`` leaves off, each inside its range too.

Nothing here raises into the child: a failure is one line on standard error.
"""

import os
import sys

#: In every copy of this file: how another one is recognised (and not chained to).
MARKER = "loopwatch-instrumentation-sitecustomize"
#: The environment variable that selects the frameworks: ``auto``, ``none`` or a list.
ENV_INSTRUMENT = "LOOPWATCH_INSTRUMENT"
#: Instrumentation only runs in a child that reports to a supervisor.
ENV_SOCKET = "LOOPWATCH_SOCKET"

#: Module whose execution completes a framework's import → the framework. A module
#: is listed once every hook point of its hook set can be looked up after it ran
#: (``optuna``'s ``__init__`` imports ``optuna.study``, so ``optuna`` is enough).
TRIGGERS = {
    "openevolve": "openevolve",
    "optuna": "optuna",
    "deap.tools": "deap",
    "deap.algorithms": "deap",
    "nevergrad": "nevergrad",
    "shinka.core": "shinka",
}
#: Every framework the instrumentation knows, as ``LOOPWATCH_INSTRUMENT`` names them.
FRAMEWORKS = ("openevolve", "shinka", "optuna", "deap", "nevergrad")

# typing costs 10 ms to import, and even __future__ costs: type checkers see these
# names and the quoted annotations, the child does not.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The ``loopwatch`` package this directory ships in: the client the instrumentation
#: reports through (the one that matches the supervisor), and the one a child's
#: ``import loopwatch`` gets unless it has another (:func:`embedded`).
_PACKAGE = os.path.dirname(_HERE)


def _warn(message: "str") -> "None":
    try:
        sys.stderr.write("loopwatch instrument: %s\n" % message)
    except Exception:  # noqa: BLE001 - no standard error
        pass


def _is_copy(origin: "str | None") -> bool:
    """Whether the file at ``origin`` is a copy of this one (another loopwatch's)."""
    if not origin:
        return False
    try:
        with open(origin, "rb") as f:
            return MARKER.encode() in f.read()
    except OSError:
        return False


def _chain() -> "None":
    """Runs the ``sitecustomize`` that Python would have found without this one (and
    without any other copy of it)."""
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    try:
        # Python's own path finder, as it sits on sys.meta_path: importing importlib
        # to get it would cost start-up time.
        found = [f for f in sys.meta_path if getattr(f, "__name__", "") == "PathFinder"]
        if found:
            finder = found[0]
        else:  # a meta path rearranged before us
            from importlib.machinery import PathFinder as finder
        while True:
            spec = finder.find_spec("sitecustomize", others)
            if spec is None or spec.loader is None:
                return
            if not _is_copy(spec.origin):
                break
            # Another loopwatch's: its directory is passed over, and the search goes on.
            skip = os.path.dirname(os.path.abspath(str(spec.origin)))
            rest = [p for p in others if os.path.abspath(p or os.curdir) != skip]
            if len(rest) == len(others):
                return  # found through an entry that does not name its directory
            others = rest
        module = type(sys)("sitecustomize")
        module.__spec__ = spec
        module.__loader__ = spec.loader
        if spec.origin is not None:
            module.__file__ = spec.origin
        ours = sys.modules.get("sitecustomize")
        sys.modules["sitecustomize"] = module
        try:
            spec.loader.exec_module(module)
        finally:
            if ours is not None:
                sys.modules["sitecustomize"] = ours
    except Exception as err:  # noqa: BLE001 - as site.py reports a failing sitecustomize
        if sys.flags.verbose:
            sys.excepthook(*sys.exc_info())
        else:
            sys.stderr.write(
                "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n%s: %s\n"
                % (err.__class__.__name__, err)
            )


def selection(value: "str | None") -> "tuple[bool, frozenset[str], tuple[str, ...]]":
    """``(auto, listed, unknown)`` from a ``LOOPWATCH_INSTRUMENT`` value: whether every
    tested framework is on, the frameworks named, and names that are not frameworks."""
    text = str(value or "auto").strip().lower()
    if text in ("", "auto"):
        return True, frozenset(), ()
    if text in ("none", "off", "0", "false"):
        return False, frozenset(), ()
    names = [n.strip() for n in text.replace(" ", ",").split(",") if n.strip()]
    listed = frozenset(n for n in names if n in FRAMEWORKS)
    unknown = tuple(n for n in names if n not in FRAMEWORKS and n != "auto")
    return "auto" in names, listed, unknown


def package_version(init: "str") -> "str | None":
    """The version of the ``loopwatch`` whose ``__init__.py`` is ``init``: its
    ``__version__``, else the version of the distribution installed beside it."""
    import re

    try:
        with open(init, encoding="utf-8") as f:
            found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.M)
        if found:
            return found.group(1)
        import glob

        site = os.path.dirname(os.path.dirname(init))
        for metadata in sorted(glob.glob(os.path.join(glob.escape(site), "loopwatch-*.dist-info", "METADATA"))):
            with open(metadata, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break  # the end of the headers
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return None


def embedded(path: "list[str] | None" = None) -> bool:
    """Whether ``import loopwatch`` gets the package this directory ships in: when no
    other ``loopwatch`` is importable from ``path`` (default ``sys.path``), or the
    other is the same version."""
    init = os.path.join(_PACKAGE, "__init__.py")
    if not os.path.isfile(init):
        return False
    from importlib.machinery import PathFinder

    here = os.path.realpath(_HERE)
    search = [p for p in (sys.path if path is None else path) if os.path.realpath(p or os.curdir) != here]
    spec = PathFinder.find_spec("loopwatch", search)
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return True  # none, or a namespace package: nothing of the user's to shadow
    if os.path.realpath(os.path.dirname(spec.origin)) == os.path.realpath(_PACKAGE):
        return True
    ours = package_version(init)
    return ours is not None and ours == package_version(spec.origin)


class _Finder(object):
    """A meta path finder for the trigger modules only: it finds them as Python
    would, then has their loader call the instrumentation once they have run."""

    #: How :func:`install` recognises one already installed, by any copy of this file.
    loopwatch_instrumentation = True

    def __init__(self, triggers: "dict[str, str]", auto: bool, listed: "frozenset[str]") -> None:
        self.triggers = triggers
        self.auto = auto
        self.listed = listed
        self.busy: "set[str]" = set()
        self.said_missing = False

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> "ModuleSpec | None":
        if fullname not in self.triggers or fullname in self.busy:
            return None
        self.busy.add(fullname)
        try:
            return self._find(fullname, path, target)
        except Exception as err:  # noqa: BLE001 - never in the way of an import
            _warn("import hook for %s failed: %s: %s" % (fullname, type(err).__name__, err))
            return None
        finally:
            self.busy.discard(fullname)

    def _find(self, fullname: str, path: object, target: object) -> "ModuleSpec | None":
        spec: "ModuleSpec | None" = None
        if fullname == "loopwatch" and embedded():
            init = os.path.join(_PACKAGE, "__init__.py")
            if os.path.isfile(init):
                from importlib.machinery import ModuleSpec, SourceFileLoader

                spec = ModuleSpec("loopwatch", SourceFileLoader("loopwatch", init), origin=init, is_package=True)
                spec.submodule_search_locations = [_PACKAGE]
                spec.has_location = True
        if spec is None:
            for finder in sys.meta_path:
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = getattr(loader, "exec_module", None)
        if original is None:
            return spec
        finder = self

        def exec_module(module: object) -> "None":
            try:
                delattr(loader, "exec_module")
            except AttributeError:
                pass
            original(module)
            finder.loaded(fullname, module)

        try:
            setattr(loader, "exec_module", exec_module)
        except (AttributeError, TypeError):
            return spec  # a loader that takes no attributes: left as it is
        return spec

    def loaded(self, fullname: str, module: object) -> "None":
        framework = self.triggers[fullname]
        try:
            try:
                from loopwatch import _instrument
            except ImportError as err:
                # The child's own loopwatch, without an instrumentation of its own.
                if not self.said_missing:
                    self.said_missing = True
                    found = getattr(sys.modules.get("loopwatch"), "__file__", None)
                    _warn(
                        "nothing instrumented: the loopwatch package imported (%s) has no instrumentation (%s)"
                        % (found or "unknown", err)
                    )
                return
            _instrument.loaded(framework, fullname, module, self.auto, framework in self.listed)
        except Exception as err:  # noqa: BLE001 - instrumentation never reaches the loop
            _warn("%s not instrumented: %s: %s" % (framework, type(err).__name__, err))


def install(environ: "dict[str, str] | None" = None) -> "_Finder | None":
    """Installs the import hook as ``environ`` (default ``os.environ``) selects;
    returns the finder, or None (also when one is installed already, by this or
    another copy of this file)."""
    env = os.environ if environ is None else environ
    if not env.get(ENV_SOCKET):
        return None
    if any(getattr(f, "loopwatch_instrumentation", False) is True for f in sys.meta_path):
        return None
    auto, listed, unknown = selection(env.get(ENV_INSTRUMENT))
    if unknown:
        _warn(
            "%s names no known framework: %s (known: %s)"
            % (ENV_INSTRUMENT, ", ".join(unknown), ", ".join(FRAMEWORKS))
        )
    if not auto and not listed:
        return None
    triggers = {m: f for m, f in TRIGGERS.items() if auto or f in listed}
    triggers["loopwatch"] = "loopwatch"
    finder = _Finder(triggers, auto, listed)
    sys.meta_path.insert(0, finder)
    for name in list(triggers):
        module = sys.modules.get(name)
        if module is not None:  # imported before this hook (a .pth file)
            finder.loaded(name, module)
    return finder


if __name__ == "sitecustomize":
    _chain()
    try:
        install()
    except Exception as err:  # noqa: BLE001
        _warn("not installed: %s: %s" % (type(err).__name__, err))
