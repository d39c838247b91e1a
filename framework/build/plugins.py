"""Finding plugins: built-in ones, installed ones (entry points), and recipe-named files.

Built-in components go through exactly the same path as a student's plugin: they are
modules with ``@hookimpl`` functions, registered first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import attrs
import pluggy

from gptf import hookspecs
from gptf.errors import PluginError, closest_path, did_you_mean

ENTRY_POINT_GROUP = "gptf"

#: What a plugin's code may raise besides Exception; caught so that an import cannot end gptf
#: (``sys.exit(0)`` in a plugin would otherwise look like success).
_ESCAPES = (SystemExit, KeyboardInterrupt)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def is_plugin_file(spec: str) -> bool:
    """A recipe's ``plugins:`` entry naming a ``.py`` file (else it names a module)."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def untrusted_plugins(specs: Sequence[str], base_dir: Path) -> list[str]:
    """The recipe plugins whose code would run only because a recipe names them: every plugin
    file, and every module that is neither built in nor an installed ``gptf`` entry point.
    (Built-ins and installed plugins were put on this computer on purpose; a run folder's
    recipe may come from anyone.)"""
    installed = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        installed |= {module, module.split(".", 1)[0]}
    untrusted = []
    for spec in specs:
        if is_plugin_file(spec):
            untrusted.append(str((base_dir / spec).resolve()))
        elif not (spec.startswith("gptf.plugins.") or spec in installed):
            untrusted.append(f"module {spec}")
    return untrusted


@attrs.define
class PluginInfo:
    """What ``gptf plugins`` shows about one plugin."""

    name: str
    origin: str  # "built-in", "entry point", "recipe"
    location: str  # module name, file path or distribution
    version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.define
class LoadedPlugins:
    """A plugin manager plus what was loaded (and what failed) to fill it."""

    manager: pluggy.PluginManager
    infos: list[PluginInfo]


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("gptf")
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(
    recipe_plugins: Sequence[str] = (),
    base_dir: Path | None = None,
    *,
    entry_points: bool = True,
) -> LoadedPlugins:
    """Register built-in plugins, then installed entry points, then the recipe's plugins.

    A broken entry-point plugin is recorded and skipped (it was not asked for by name);
    a recipe plugin that fails is a :class:`PluginError`, because the recipe needs it. So is a
    recipe plugin with the name of an installed one: one of them would be ignored, silently.
    """
    from gptf.plugins import BUILTIN_MODULES

    manager = new_manager()
    infos: list[PluginInfo] = []
    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        name = "builtin." + module_name.rsplit(".", 1)[-1]
        manager.register(module, name=name)
        infos.append(PluginInfo(name, "built-in", module_name))
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            infos.append(_register_entry_point(manager, ep))
    for spec in recipe_plugins:
        infos.append(_register_recipe_plugin(manager, spec, base_dir or Path.cwd(), infos))
    return LoadedPlugins(manager, infos)


def _register_entry_point(manager: pluggy.PluginManager, ep: importlib.metadata.EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    location = f"{dist.name} ({ep.value})" if dist is not None else ep.value
    info = PluginInfo(ep.name, "entry point", location, dist.version if dist else None)
    if manager.has_plugin(ep.name):
        return info  # already registered (e.g. listed twice)
    try:
        module = ep.load()
        manager.register(module, name=ep.name)
        _check_hooks(manager, module, ep.name)
    except (Exception, *_ESCAPES) as exc:
        if manager.is_registered(locals().get("module")):
            manager.unregister(name=ep.name)
        info.error = _failure(exc)
    return info


def closest_plugin_file(path: Path) -> Path | None:
    """For a plugin file that is not there: the ``.py`` file of the closest name nearby (a typo), if any."""
    return closest_path(path, lambda p: p.suffix == ".py" and p.is_file(), depth=1)


def _register_recipe_plugin(
    manager: pluggy.PluginManager, spec: str, base_dir: Path, loaded: list[PluginInfo]
) -> PluginInfo:
    """``spec`` is a path to a ``.py`` file (relative to the recipe) or a module name."""
    if is_plugin_file(spec):
        path = (base_dir / spec).resolve()
        if not path.is_file():
            close = closest_plugin_file(path)
            guess = f"; did you mean {close}?" if close is not None else ""
            raise PluginError(f"plugin file not found: {path} (listed in the recipe's plugins: as '{spec}'{guess})")
        name, location = path.stem, str(path)
        _refuse_shadowing(manager, name, location, loaded)
        if manager.has_plugin(name):
            return PluginInfo(name, "recipe", location)  # the same file listed twice
        module = _import_file(path)
    else:
        name = spec
        try:
            module = importlib.import_module(spec)
        except (Exception, *_ESCAPES) as exc:
            raise PluginError(f"plugin module '{spec}' failed to import: {_failure(exc)}") from exc
        location = getattr(module, "__file__", None) or spec
        if manager.is_registered(module):  # e.g. installed and also named in the recipe: the same module
            return PluginInfo(name, "recipe", location)
        _refuse_shadowing(manager, name, location, loaded)
        if manager.has_plugin(name):
            return PluginInfo(name, "recipe", location)
    manager.register(module, name=name)
    try:
        _check_hooks(manager, module, location)
    except PluginError:
        manager.unregister(module)
        raise
    return PluginInfo(name, "recipe", location)


def _refuse_shadowing(manager: pluggy.PluginManager, name: str, location: str, loaded: list[PluginInfo]) -> None:
    """Two different plugins with one name: pluggy would keep the first and drop the other silently."""
    if not manager.has_plugin(name):
        return
    other = next((i for i in loaded if i.name == name), None)
    if other is None or other.location == location:
        return  # the same plugin, listed twice
    raise PluginError(
        f"two plugins are named '{name}': the {other.origin} plugin {other.location}"
        f"{f' {other.version}' if other.version else ''} and the recipe's plugin {location}; "
        "gptf would use only the first and ignore the other without a word",
        hint="rename the recipe's plugin file (or module), or uninstall the installed package (see 'gptf plugins')",
    )


def _import_file(path: Path) -> ModuleType:
    """Import a plugin file under a private module name (no clash with real modules)."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"gptf_user_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, *_ESCAPES) as exc:
        del sys.modules[module_name]
        raise PluginError(f"plugin file {path} failed to import: {_failure(exc)}") from exc
    return module


def _check_hooks(manager: pluggy.PluginManager, module: object, where: str) -> None:
    """A plugin must implement at least one known hook, and no misspelt ones."""
    known = set(hookspecs.HOOK_FOR_KIND.values())
    implemented = [name for name in dir(module) if getattr(getattr(module, name, None), "gptf_impl", None) is not None]
    unknown = [name for name in implemented if name not in known]
    if unknown:
        bad = unknown[0]
        raise PluginError(
            f"plugin {where} implements unknown hook '{bad}'{did_you_mean(bad, known)}; "
            f"valid hooks: {', '.join(sorted(known))}"
        )
    if not implemented:
        raise PluginError(
            f"plugin {where} registers nothing: it has no @hookimpl function "
            f"(e.g. 'from gptf import hookimpl' then '@hookimpl def register_norms(): ...')"
        )
