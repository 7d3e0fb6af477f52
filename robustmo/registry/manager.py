"""The plugin manager: loads plugins from the ``robustmo`` entry-point group and
collects what they register, isolating each plugin from the others' failures.

Built-in plugins are declared in robustmo's own pyproject under the same group,
so they load exactly as a third-party ``pip install robustmo-foo`` does.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from robustmo.core.concepts import KIND, KINDS, Component, label
from robustmo.core.errors import RobustmoError
from robustmo.registry import hookspecs
from robustmo.registry.markers import PROJECT

ENTRY_POINT_GROUP = PROJECT
STRICT_ENV = "ROBUSTMO_STRICT_PLUGINS"



class PluginError(Exception):
    """Raised instead of skipping a broken plugin when ROBUSTMO_STRICT_PLUGINS=1."""


@dataclass(frozen=True)
class Entry:
    """One registered object and where it came from."""

    kind: str
    name: str
    obj: Component
    plugin: str
    package: str
    version: str

    @property
    def description(self) -> str:
        return self.obj.description


@dataclass(frozen=True)
class Problem:
    """A plugin that failed to import or register; it was skipped."""

    plugin: str
    package: str
    reason: str


@dataclass
class _Source:
    package: str = "-"
    version: str = "-"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Registry:
    """Typed access to everything the loaded plugins registered."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    problems: list[Problem] = field(default_factory=list)
    _sources: dict[str, _Source] = field(default_factory=dict)
    _entries: dict[tuple[str, str], Entry] | None = None
    _conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)

    # --- loading -----------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every plugin of the ``robustmo`` entry-point group, skipping broken ones."""
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            source = _Source(dist.name, dist.version) if dist else _Source()
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must never break the CLI
                self._fail(ep.name, source.package, exc, "import failed")
                continue
            if not self._hooks_known(ep.name, source.package):
                continue
            self._sources[ep.name] = source

    def _hooks_known(self, name: str, package: str) -> bool:
        """pluggy's ``check_pending``: a hook implementation without a hookspec (a misspelt
        hook name) is an error, so the plugin is reported and unregistered, not silently ignored."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = self.pm.unregister(name=name)
            known = [n for n in dir(hookspecs) if n.startswith("register_")]
            wrong = sorted(n for n in dir(plugin) if n.startswith("register") and n not in known
                           and hasattr(getattr(plugin, n), "robustmo_impl"))
            close = difflib.get_close_matches(wrong[0], known, n=1) if wrong else []
            what = (f"unknown hook {wrong[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                    if wrong else str(exc))
            self._fail(name, package, ValueError(what), "hook check failed")
            return False
        return True

    def register(self, plugin: Any, name: str | None = None, package: str = "-", version: str = "-") -> None:
        """Register an in-process plugin (a module or an object with @hookimpl methods)."""
        name = self.pm.register(plugin, name=name)
        self._entries = None
        if self._hooks_known(name, package):
            self._sources[name] = _Source(package, version)

    def _fail(self, plugin: str, package: str, exc: BaseException, what: str) -> None:
        if _strict():
            raise PluginError(f"plugin {plugin!r} ({package}): {what}: {_one_line(exc)}") from exc
        self.problems.append(Problem(plugin, package, f"{what}: {_one_line(exc)}"))

    # --- collecting --------------------------------------------------------------
    def _collect(self) -> dict[tuple[str, str], Entry]:
        if self._entries is not None:
            return self._entries
        entries: dict[tuple[str, str], Entry] = {}
        self._conflicts = {}
        for kind in (k.name for k in KINDS):
            hook_name = KIND[kind].hook
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                source = self._sources.get(impl.plugin_name, _Source())
                registered: list[Any] = []
                try:
                    impl.function(**{a: registered.append for a in impl.argnames})
                except Exception as exc:
                    self._fail(impl.plugin_name, source.package, exc, f"{hook_name} failed")
                    continue
                for obj in registered:
                    entry = self._check(kind, obj, impl.plugin_name, source)
                    if entry is None:
                        continue
                    key = (kind, entry.name)
                    if key in entries or key in self._conflicts:
                        first = entries.pop(key, None)
                        self._conflicts.setdefault(key, [first] if first else []).append(entry)
                    else:
                        entries[key] = entry
        if self._conflicts and _strict():
            raise PluginError(self._conflict_message(next(iter(self._conflicts))))
        self._entries = entries
        return entries

    def _check(self, kind: str, obj: Any, plugin: str, source: _Source) -> Entry | None:
        expected, hook = KIND[kind].cls, KIND[kind].hook
        if not isinstance(obj, expected):
            self._fail(plugin, source.package, TypeError(f"registered {obj!r}, which is not a {expected.__name__}"), hook)
            return None
        if not isinstance(obj.name, str) or not obj.name.strip():
            self._fail(plugin, source.package, ValueError(f"{type(obj).__name__} has no name"), hook)
            return None
        problem = obj.problem()
        if problem:
            self._fail(plugin, source.package, ValueError(problem), hook)
            return None
        return Entry(kind, obj.name, obj, plugin, source.package, source.version)

    def _conflict_message(self, key: tuple[str, str]) -> str:
        kind, name = key
        who = " and ".join(f"{e.package} (plugin {e.plugin!r})" for e in self._conflicts[key])
        return (f"{label(kind)} {name!r} is registered by both {who}; "
                f"uninstall one of them (pip uninstall ...) to use it")

    # --- queries -----------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[Entry]:
        found = self._collect().values()
        order = [k.name for k in KINDS]
        return sorted((e for e in found if kind in (None, e.kind)), key=lambda e: (order.index(e.kind), e.name))

    def conflicts(self) -> list[str]:
        self._collect()
        return [self._conflict_message(k) for k in self._conflicts]

    def names(self, kind: str) -> list[str]:
        return [e.name for e in self.entries(kind)]

    def get(self, kind: str, name: str) -> Entry:
        entries = self._collect()
        if (kind, name) in self._conflicts:
            raise RobustmoError(self._conflict_message((kind, name)))
        if (kind, name) in entries:
            return entries[(kind, name)]
        raise RobustmoError(unknown_name_message(label(kind), name, self.names(kind)))

    def add_commands(self, cli) -> None:
        """Let every plugin add CLI commands; one that fails is reported and skipped."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:
                source = self._sources.get(impl.plugin_name, _Source())
                self._fail(impl.plugin_name, source.package, exc, "register_commands failed")

    def plugin_rows(self) -> list[dict[str, str]]:
        """One row per loaded plugin module (name, package, version), for listings."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            source = self._sources.get(name, _Source())
            rows.append({"plugin": name, "package": source.package, "version": source.version})
        return sorted(rows, key=lambda r: r["plugin"])


def unknown_name_message(label: str, name: str, available: list[str]) -> str:
    if not available:
        return f"unknown {label} {name!r}: no {label}s are installed (see 'robustmo plugins')"
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {label} {name!r}{hint}; available: {', '.join(available)}"


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, with entry-point plugins loaded on first use."""
    global _registry
    if _registry is None:
        registry = Registry()
        registry.load_entry_points()
        _registry = registry
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry (tests use this after installing or registering plugins)."""
    global _registry
    _registry = None

