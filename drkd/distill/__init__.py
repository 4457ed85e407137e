"""The distill layer: the Distiller interface, pieces shared by methods, one subpackage per method.

Importing this package registers every method: each subpackage (``drkd/distill/<name>/``) registers
its :class:`~drkd.config.methods.MethodSpec` when imported, and this module imports them all, so a
new method is one new package and no other file changes. Methods kept outside drkd are imported
from the comma-separated module names in ``$DRKD_METHODS`` (set it in the Ray job's runtime_env so
the trial workers register them too). Registration imports no torch.
"""

from __future__ import annotations

import importlib
import os
import pkgutil


def _register_methods() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")
    for name in filter(None, (n.strip() for n in os.environ.get("DRKD_METHODS", "").split(","))):
        importlib.import_module(name)


_register_methods()
