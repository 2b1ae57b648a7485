"""repairbot's platform-free core; importing it first defers what redis-py loads but never uses."""

from backend import lazy_imports as lazy_imports
