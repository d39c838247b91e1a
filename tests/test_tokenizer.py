"""The byte-level BPE tokenizer: the shipped teacher tokenizer, specials, and no garbled text."""

from __future__ import annotations

import json

import pytest
from conftest import PEER, ROOT

from gptf.build.components import new_tokenizer, registry_for
from gptf.data import read_jsonl, training_texts
from gptf.interfaces import Tokenizer
from gptf.recipe import load_recipe

TEACHER = ROOT / "recipes" / "teacher_3m.yaml"


def fresh_tokenizer() -> Tokenizer:
    loaded = load_recipe(TEACHER)
    return new_tokenizer(loaded.recipe, registry_for(loaded))


def test_shipped_teacher_tokenizer_is_up_to_date_with_the_data() -> None:
    """tokenizer/teacher_3m.json must be what training on data/train.jsonl gives today."""
    shipped = ROOT / "tokenizer" / "teacher_3m.json"
    retrained = fresh_tokenizer()
    retrained.train(training_texts(read_jsonl(ROOT / "data" / "train.jsonl")))
    assert json.loads(retrained.hf.to_str()) == json.loads(shipped.read_text(encoding="utf-8")), (
        "the data changed: rebuild with gptf run recipes/teacher_3m.yaml tokenizer.rebuild=true"
    )
    assert retrained.vocab_size == 824


def test_specials_and_roundtrip() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.load(ROOT / "tokenizer" / "teacher_3m.json")
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id) == (0, 1, 2, 3)
    text = "用户:什么是RoPE？\n助手:旋转位置编码。生僻字：龘"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tokenizer.token_bytes(tokenizer.eos_id) == b""


@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer is not present")
def test_original_release_tokenizer_loads() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.load(PEER / "tokenizer.json")
    assert tokenizer.vocab_size == 824
    text = "用户:解释蒸馏水与纯水区别？\n助手:"
    assert tokenizer.decode(tokenizer.encode(text)) == text
