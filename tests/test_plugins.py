"""Student plugins: a local file named in a recipe, and an installed entry-point plugin."""

from __future__ import annotations

from pathlib import Path

from conftest import SCALE_NORM, TINY_RECIPE, run_gptf


def write_recipe(folder: Path, extra: str) -> Path:
    recipe = folder / "student.yaml"
    recipe.write_text(f"extends: {TINY_RECIPE}\nname: student\noutput_dir: checkpoints/student\n{extra}")
    return recipe


def test_local_file_plugin_trains(workdir: Path) -> None:
    (workdir / "my_norm.py").write_text(SCALE_NORM)
    recipe = write_recipe(workdir, "plugins: [./my_norm.py]\nmodel: {norm: scalenorm}\ntraining: {max_steps: 2}\n")
    result = run_gptf(["run", str(recipe)], workdir)
    assert result.returncode == 0, result.stderr
    assert "scalenorm" in result.stdout and "my_norm" in result.stdout
    listed = run_gptf(["plugins", "--recipe", str(recipe)], workdir)
    assert "norm: scalenorm" in listed.stdout
    # the run directory remembers the plugin file, so generate rebuilds the same model; a run
    # folder may come from anyone, so its plugin code runs only when asked to (--trust-plugins)
    refused = run_gptf(["generate", "--ckpt", "checkpoints/student", "--prompt", "你是谁"], workdir)
    assert refused.returncode == 2 and "my_norm.py" in refused.stderr and "--trust-plugins" in refused.stderr
    answer = run_gptf(["generate", "--ckpt", "checkpoints/student", "--prompt", "你是谁", "--trust-plugins"], workdir)
    assert answer.returncode == 0, answer.stderr


def test_entry_point_plugin_needs_no_plugins_line(workdir: Path) -> None:
    site = workdir / "site"
    (site / "gptf_scalenorm").mkdir(parents=True)
    (site / "gptf_scalenorm" / "__init__.py").write_text(SCALE_NORM)
    dist = site / "gptf_scalenorm-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gptf-scalenorm\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[gptf]\nscalenorm = gptf_scalenorm\n")
    recipe = write_recipe(workdir, "model: {norm: scalenorm}\ntraining: {max_steps: 2}\n")
    import os

    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{env_path}"
    try:
        listed = run_gptf(["plugins"], workdir)
        result = run_gptf(["run", str(recipe)], workdir)
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert "gptf-scalenorm" in listed.stdout and "0.1.0" in listed.stdout
    assert result.returncode == 0, result.stderr
    assert "scalenorm" in result.stdout


def test_duplicate_component_names_both_plugins(workdir: Path) -> None:
    (workdir / "a_norm.py").write_text(SCALE_NORM)
    (workdir / "b_norm.py").write_text(SCALE_NORM)
    recipe = write_recipe(workdir, "plugins: [./a_norm.py, ./b_norm.py]\nmodel: {norm: scalenorm}\n")
    result = run_gptf(["run", str(recipe)], workdir)
    assert result.returncode == 2
    assert "a_norm" in result.stderr and "b_norm" in result.stderr and "Traceback" not in result.stderr


def test_plugin_with_misspelt_hook_is_explained(workdir: Path) -> None:
    (workdir / "typo.py").write_text(SCALE_NORM.replace("def register_norms", "def register_norm"))
    recipe = write_recipe(workdir, "plugins: [./typo.py]\n")
    result = run_gptf(["run", str(recipe)], workdir)
    assert result.returncode == 2
    assert "unknown hook 'register_norm'" in result.stderr and "did you mean 'register_norms'" in result.stderr


def install_fake_package(folder: Path, monkeypatch: object, module: str, entry: str, code: str) -> None:
    """A package with a ``gptf`` entry point, importable as if pip had installed it."""
    import importlib

    site = folder / "site"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(code)
    dist = site / f"{module}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[gptf]\n{entry} = {module}\n")
    monkeypatch.syspath_prepend(str(site))  # type: ignore[attr-defined]
    importlib.invalidate_caches()


def test_a_recipe_plugin_named_like_an_installed_one_is_an_error(workdir: Path, monkeypatch: object) -> None:
    """Before: the installed package won and the recipe's file was never even imported."""
    import pytest

    from gptf.build.plugins import load_plugins
    from gptf.errors import PluginError

    install_fake_package(workdir, monkeypatch, "gptf_shadow_norm", "scalenorm", SCALE_NORM)
    (workdir / "scalenorm.py").write_text(SCALE_NORM.replace('"scalenorm"', '"my_scalenorm"'))
    with pytest.raises(PluginError) as caught:
        load_plugins(["./scalenorm.py"], workdir)
    message = str(caught.value)
    assert "two plugins are named 'scalenorm'" in message
    assert "entry point plugin gptf-shadow-norm (gptf_shadow_norm) 0.1.0" in message
    assert str(workdir / "scalenorm.py") in message and "rename" in message
    load_plugins(["./scalenorm.py", "./scalenorm.py"], workdir, entry_points=False)  # listed twice: fine


def test_the_same_component_from_an_installed_and_a_recipe_plugin_is_an_error(
    workdir: Path, monkeypatch: object
) -> None:
    import pytest

    from gptf.build.plugins import load_plugins
    from gptf.build.registry import Registry
    from gptf.errors import PluginError

    install_fake_package(workdir, monkeypatch, "gptf_shadow_norm2", "shadow_norm2", SCALE_NORM)
    (workdir / "my_norm.py").write_text(SCALE_NORM)
    with pytest.raises(PluginError) as caught:
        Registry(load_plugins(["./my_norm.py"], workdir))
    message = str(caught.value)
    assert "two plugins register the norm 'scalenorm'" in message
    assert "'shadow_norm2' (entry point: gptf-shadow-norm2 (gptf_shadow_norm2) 0.1.0)" in message
    assert f"'my_norm' (recipe: {workdir / 'my_norm.py'})" in message
