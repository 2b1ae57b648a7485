"""Libraries that redis-py imports at start-up but repairbot never calls, run on first use instead.

redis-py 5.x imports PyJWT in `redis.auth.token` (for Entra ID token auth), and PyJWT imports
`cryptography` when it is installed: about half of `import redis.asyncio`, paid by every command,
`repairbot status` included, for a feature repairbot does not use. A deferred module is registered
under its own name with its import metadata (`__spec__`, `__path__`, ...) but without having run;
the first read of any other name runs the module's own code into it, so whoever does use it gets it
whole. (The standard library's LazyLoader cannot do this: an `import` statement reads `__spec__`,
which already makes it load.)
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from importlib.machinery import ModuleSpec
from typing import Any

DEFERRED = ("jwt",)


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its names is read, then becomes it."""

    def __init__(self, spec: ModuleSpec) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec
        self.__loader__ = spec.loader
        self.__file__ = spec.origin
        self.__package__ = spec.parent if spec.submodule_search_locations is None else spec.name
        if spec.submodule_search_locations is not None:
            self.__path__ = list(spec.submodule_search_locations)
        self.__dict__["_deferred_lock"] = threading.RLock()
        self.__dict__["_deferred_state"] = "waiting"

    def __getattr__(self, name: str) -> Any:  # called only for names the module does not have yet
        with self.__dict__["_deferred_lock"]:
            if self.__dict__["_deferred_state"] == "waiting":
                self.__dict__["_deferred_state"] = "running"
                assert self.__spec__ is not None and self.__spec__.loader is not None
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    self.__dict__["_deferred_state"] = "waiting"  # the next use raises it again
                    raise
                self.__dict__["_deferred_state"] = "done"
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def defer(name: str) -> None:
    """Register top-level module `name` so that importing it costs nothing until it is used; a no-op
    once it is imported, and when it is not installed."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    sys.modules[name] = DeferredModule(spec)


for _name in DEFERRED:
    defer(_name)
