"""The registry: every component by kind and name, and which plugin provided it.

The core never imports a concrete component; it asks the registry by name.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from torch import nn

from gptf.build.plugins import LoadedPlugins, PluginInfo
from gptf.errors import PluginError, RecipeError, choices_text, did_you_mean, shown
from gptf.hookspecs import CONTEXT, HOOK_FOR_KIND
from gptf.interfaces import PositionalEncoding
from gptf.recipe.value_types import type_problem

#: What a component may be called: what a recipe (or a KEY=VALUE override) can write as it is.
COMPONENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # (a leading digit: YAML would read 1 as a number)


@attrs.define
class ComponentInfo:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The recipe parameters the factory accepts (context arguments excluded)."""
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return {}
        return {
            name: p
            for name, p in signature.parameters.items()
            if name not in CONTEXT[self.kind]
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }

    def accepts_any(self) -> bool:
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return True
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


class Registry:
    """Components by kind and name, filled by calling each plugin's hooks one by one."""

    def __init__(self, loaded: LoadedPlugins) -> None:
        self.plugins: list[PluginInfo] = loaded.infos
        self.components: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in HOOK_FOR_KIND}
        manager = loaded.manager
        for kind, hook_name in HOOK_FOR_KIND.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                try:
                    provided = impl.function()
                except (Exception, SystemExit, KeyboardInterrupt) as exc:  # sys.exit() must not end gptf
                    raise PluginError(
                        f"plugin '{impl.plugin_name}' failed in {hook_name}(): {type(exc).__name__}: {exc}"
                    ) from exc
                if not isinstance(provided, Mapping):
                    raise PluginError(
                        f"plugin '{impl.plugin_name}': {hook_name}() must return a dict "
                        f"{{name: factory}}, got {type(provided).__name__}"
                    )
                for name, factory in provided.items():
                    if not isinstance(name, str) or not COMPONENT_NAME.fullmatch(name):
                        raise PluginError(
                            f"plugin '{impl.plugin_name}': {hook_name}() registers a {kind} named {shown(name)}: "
                            "a component's name is what a recipe writes: letters, digits, '_', '-' and '.', "
                            "a letter or '_' first (e.g. 'my_norm')"
                        )
                    self._add(ComponentInfo(kind, name, factory, impl.plugin_name))

    def _add(self, info: ComponentInfo) -> None:
        existing = self.components[info.kind].get(info.name)
        if existing is not None and existing.factory is not info.factory:
            raise PluginError(
                f"two plugins register the {info.kind} '{info.name}': {self._where(existing.plugin)} and "
                f"{self._where(info.plugin)}; gptf cannot tell which one a recipe means",
                hint="rename one of them (the component, in a plugin of yours), or uninstall the installed package "
                "(see 'gptf plugins')",
            )
        if not callable(info.factory):
            raise PluginError(
                f"plugin '{info.plugin}' registered {info.kind} '{info.name}' with a factory that is not callable"
            )
        self.components[info.kind][info.name] = info

    def _where(self, plugin: str) -> str:
        """``'scalenorm' (entry point: gptf-scalenorm (gptf_scalenorm) 0.1.0)``."""
        info = next((i for i in self.plugins if i.name == plugin), None)
        if info is None:
            return f"'{plugin}'"
        version = f" {info.version}" if info.version else ""
        return f"'{plugin}' ({info.origin}: {info.location}{version})"

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str, where: str = "") -> ComponentInfo:
        found = self.components[kind].get(name)
        if found is None:
            raise RecipeError(where or kind, [self.unknown_message(kind, name, where)])
        return found

    def unknown_message(self, kind: str, name: str, where: str) -> str:
        label = kind.replace("_", " ")
        return (
            f"{where}: unknown {label} '{name}'{did_you_mean(name, self.components[kind])}; "
            f"valid choices: {choices_text(self.components[kind])}"
        )

    def check(self, kind: str, name: str, params: Mapping[str, Any], where: str) -> list[str]:
        """Problems with selecting ``name`` with ``params`` at recipe key ``where``."""
        info = self.components[kind].get(name)
        if info is None:
            return [self.unknown_message(kind, name, where)]
        accepted = info.parameters()
        problems = []
        for key, value in params.items():
            if key in CONTEXT[kind]:
                problems.append(f"{where}.{key}: is set by the engine, not the recipe")
            elif key not in accepted:
                if not info.accepts_any():
                    valid = ", ".join(accepted) or "none"
                    problems.append(
                        f"{where}.{key}: {kind.replace('_', ' ')} '{name}' has no parameter "
                        f"'{key}'{did_you_mean(key, accepted)}; it accepts: {valid}"
                    )
            else:
                problem = type_problem(value, _annotation(info.factory, key))
                if problem:
                    problems.append(f"{where}.{key}: {problem}")
        for pname, p in accepted.items():
            if p.default is inspect.Parameter.empty and pname not in params:
                problems.append(f"{where}.{pname}: required by {kind} '{name}' but not given")
        return problems

    def build(self, kind: str, name: str, params: Mapping[str, Any], where: str, /, **context: Any) -> Any:
        """Create a component; a failure names the plugin and the component."""
        problems = self.check(kind, name, params, where)
        if problems:
            raise RecipeError(where, problems)
        info = self.components[kind][name]
        try:
            component = info.factory(**context, **params)
        except PluginError:  # a component it builds in turn (a block's norm) already names its plugin
            raise
        except (Exception, SystemExit) as exc:
            raise PluginError(
                f"{kind} '{name}' (from plugin '{info.plugin}') failed to build at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        if _forward_missing(component):
            raise PluginError(
                f"{kind} '{name}' (from plugin '{info.plugin}') at {where} has no forward() method; "
                f"the class {type(component).__name__} must define one"
            )
        return component


def _forward_missing(component: Any) -> bool:
    """A module the model calls (norm, attention, MLP, block) whose class never defined ``forward``;
    a positional encoding is called by its ``embed``/``rotate``/``score_bias`` instead."""
    if not isinstance(component, nn.Module) or isinstance(component, PositionalEncoding):
        return False
    forward = type(component).forward
    return forward is nn.Module.forward or getattr(forward, "__module__", None) == PositionalEncoding.__module__


def _annotation(factory: Callable[..., Any], name: str) -> Any:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        return Any
    return hints.get(name, Any)
