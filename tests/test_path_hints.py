"""A path that is not there: the hint names the closest one that is (gptf.errors.closest_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptf.errors import GptfError, closest_path
from gptf.recipe import load_recipe


def is_file(path: Path) -> bool:
    return path.is_file()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("recipes/teacher_3m.yaml", "recipes/ablations/learned_positions.yaml", "data/train.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("name: x\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("recipes/teacher3m.yaml", "recipes/teacher_3m.yaml"),  # a misspelt name
        ("recipe/teacher_3m.yaml", "recipes/teacher_3m.yaml"),  # a misspelt folder
        ("teacher_3m.yaml", "recipes/teacher_3m.yaml"),  # a folder left out
        ("recipes/learned_positions.yaml", "recipes/ablations/learned_positions.yaml"),  # one left out below
        ("data/trian.jsonl", "data/train.jsonl"),
    ],
)
def test_the_closest_existing_path_is_found(tree: Path, asked: str, found: str) -> None:
    assert closest_path(tree / asked, is_file) == tree / found


def test_nothing_close_nothing_hidden_nothing_refused(tree: Path) -> None:
    assert closest_path(tree / "recipes" / "x.yaml", is_file) is None  # no name is close
    (tree / ".hidden").mkdir()
    (tree / ".hidden" / "secret.yaml").write_text("", encoding="utf-8")
    assert closest_path(tree / "secrte.yaml", is_file) is None  # hidden folders are not searched
    assert closest_path(tree / "data" / "trian.jsonl", lambda p: p.suffix == ".yaml") is None  # accept decides
    assert closest_path(tree / "recipes" / "deep" / "er" / "teacher3m.yaml", is_file, depth=0) is not None


def test_a_misspelt_recipe_names_the_closest_and_lists_the_folder(tree: Path) -> None:
    with pytest.raises(GptfError) as caught:
        load_recipe(tree / "recipes" / "teacher3m.yaml")
    assert f"did you mean {tree / 'recipes' / 'teacher_3m.yaml'}?" in str(caught.value)
    assert "recipes in" in str(caught.value) and "ablations/" in str(caught.value)
    (tree / "a.yaml").write_text("extends: recipes/teacher3m.yaml\n", encoding="utf-8")
    with pytest.raises(GptfError, match=r"extends: file not found: .*did you mean .*teacher_3m\.yaml"):
        load_recipe(tree / "a.yaml")


def test_a_misspelt_data_file_names_the_closest_jsonl(tree: Path) -> None:
    from gptf.data import read_jsonl
    from gptf.errors import DataError

    with pytest.raises(DataError, match=r"data file not found: .*trian\.jsonl \(did you mean .*data/train\.jsonl\?\)"):
        read_jsonl(tree / "data" / "trian.jsonl")


def test_places_that_cannot_be_looked_into_are_passed_over(tree: Path) -> None:
    """A hint never fails the error it belongs to (as root in a container, /proc/1/cwd says EACCES)."""

    def accept(path: Path) -> bool:
        if path.name == "teacher_3m.yaml":
            raise PermissionError(13, "Permission denied", str(path))
        return path.is_file()

    assert closest_path(tree / "recipes" / "teacher3m.yaml", accept) is None
    assert closest_path(tree / "data" / "trian.jsonl", accept) == tree / "data" / "train.jsonl"
