"""gptf: build, train and question a small Chinese GPT, one swappable component at a time.

The engine lives in this package (the ``framework/`` folder, imported as ``gptf``);
every component a student may swap is provided by a plugin (``plugins/``, imported as
``gptf.plugins``) through the hooks in :mod:`gptf.hookspecs`.
"""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@hookimpl def register_norms(): ...``
hookimpl = pluggy.HookimplMarker("gptf")

__all__ = ["__version__", "hookimpl"]
