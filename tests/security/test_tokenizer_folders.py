"""A tokenizer folder whose config points at its own Python code (auto_map): that code never runs."""

from __future__ import annotations

import builtins
import json
import textwrap

import pytest

from opwise.cli import main
from opwise.cli.explain_text import load_tokenizer

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

EVIL_MODULE = textwrap.dedent('''
    import os
    os.mkdir(%r)
    from transformers import PreTrainedTokenizerFast

    class EvilTokenizer(PreTrainedTokenizerFast):
        pass
''')


def tokenizer_folder(root, marker, tokenizer_class):
    """A saved word tokenizer whose config maps AutoTokenizer to tokenization_evil.py, which mkdirs on import."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "the": 2, "cat": 3}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = root / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", "tokenization_evil.EvilTokenizer"]}
    if tokenizer_class is None:
        config.pop("tokenizer_class", None)
    else:
        config["tokenizer_class"] = tokenizer_class
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_evil.py").write_text(EVIL_MODULE % str(marker))
    return folder


@pytest.fixture
def user_says_yes(monkeypatch):
    """transformers asks 'Do you wish to run the custom code? [y/N]' unless told not to: the answer would be yes."""
    monkeypatch.setattr(builtins, "input", lambda *args: "y")


@pytest.mark.parametrize("tokenizer_class", ["EvilTokenizer", None])
def test_folder_needing_its_own_code_is_refused(tmp_path, capsys, marker, user_says_yes, tokenizer_class):
    folder = tokenizer_folder(tmp_path, marker, tokenizer_class)
    code = main(["explain", "model.py:make", "--text", "the cat", "--tokenizer", str(folder)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "needs its own Python code to load (auto_map in its config)" in err


def test_folder_with_auto_map_and_a_standard_class_loads_without_its_code(tmp_path, marker, user_says_yes):
    folder = tokenizer_folder(tmp_path, marker, "PreTrainedTokenizerFast")
    tokenizer = load_tokenizer(str(folder))
    assert type(tokenizer).__name__ != "EvilTokenizer"
    assert tokenizer("the cat")["input_ids"] == [2, 3]
