"""robustmo's plugin core: pluggy hookspecs, entry-point loading and typed lookups."""

from robustmo.registry.manager import (
    ENTRY_POINT_GROUP,
    Entry,
    PluginError,
    Problem,
    Registry,
    get_registry,
    reset_registry,
)
from robustmo.registry.markers import hookimpl, hookspec

__all__ = [
    "ENTRY_POINT_GROUP", "Entry", "PluginError", "Problem", "Registry",
    "get_registry", "hookimpl", "hookspec", "reset_registry",
]
