"""`opwise explain MODEL --text ... --tokenizer SPEC` with a tokenizer and tiny random models built here."""

from __future__ import annotations

import textwrap

import pytest
import torch

import opwise
from opwise.cli import main
from opwise.cli.explain_text import load_tokenizer, text_target, tokenize
from opwise.errors import InputError
from opwise.tracing.loading import call_factory

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

WORDS = ["[PAD]", "[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog"]

MODELS = textwrap.dedent('''
    import torch
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    def language_model():
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=9, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()

    def classifier():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16, num_labels=3)
        return BertForSequenceClassification(config).eval()

    def small_vocabulary_model():
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=4, n_positions=16, n_embd=8, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()
''')

TOKENIZER_FACTORY = textwrap.dedent('''
    from tokenizers import Tokenizer, models, pre_tokenizers

    def words():
        vocabulary = {word: index for index, word in enumerate(%r)}
        tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        return tokenizer
''' % WORDS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved transformers tokenizer folder, a tokenizer factory file and a model factory file."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("text")
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(root / "tokenizer")
    (root / "models.py").write_text(MODELS)
    (root / "tokenizer.py").write_text(TOKENIZER_FACTORY)
    return root


@pytest.fixture
def drawn(monkeypatch):
    """Record what the command hands to token_heatmap (and still write the PNG)."""
    from opwise.attribution import pictures as module

    calls = []
    original = module.token_heatmap

    def record(tokens, relevance, path=None, **options):
        calls.append((list(tokens), relevance.clone(), path))
        return original(tokens, relevance, path, **options)

    monkeypatch.setattr(module, "token_heatmap", record)
    return calls


def test_language_model_explains_the_predicted_next_token(files, drawn, tmp_path, capsys):
    out = tmp_path / "tokens.png"
    code = main(["explain", f"{files / 'models.py'}:language_model", "--text", "the cat sat on the",
                 "--tokenizer", str(files / "tokenizer"), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "tokens (5): the[" in text and " cat[" in text and "prediction: next token '" in text and "conservation:" in text
    assert out.stat().st_size > 0
    tokens, relevance, path = drawn[0]
    assert tokens == ["the", "cat", "sat", "on", "the"] and path == str(out)
    # The same numbers as the API: AttnLRP on the last position's logit of the predicted token.
    model = call_factory(files / "models.py", "language_model")
    ids = torch.tensor([[2, 3, 4, 5, 2]])
    with torch.no_grad():
        predicted = int(model(ids).logits[0, -1].argmax())
    expected = opwise.explain(model, ids, target=lambda out: out[:, -1, predicted], composite="attn-lrp")
    torch.testing.assert_close(relevance, expected.relevance[0])
    assert f"(id {predicted}) = {float(expected.explained_output[0]):.4f}" in text


def test_classifier_with_a_tokenizer_factory_and_a_target_class(files, drawn, tmp_path, capsys):
    code = main(["explain", f"{files / 'models.py'}:classifier", "--text", "a dog sat", "--target", "2",
                 "--tokenizer", f"{files / 'tokenizer.py'}:words", "--composite", "cp-lrp", "--out", str(tmp_path / "c.png")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "target: class 2" in text and "explained: logit of class 2 =" in text
    tokens, relevance, _ = drawn[0]
    assert tokens == ["a", "dog", "sat"] and relevance.shape == (3,)
    total = float(text.split("input relevance sums to ")[1].split()[0])
    assert total == pytest.approx(float(relevance.sum()), abs=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "the cat"], "--text needs --tokenizer SPEC"),
        (["--tokenizer", "TOKENIZER"], "--tokenizer needs --text"),
        (["--text", "   ", "--tokenizer", "TOKENIZER"], "--text is empty"),
        (["--text", "the cat", "--tokenizer", "no/such/folder"], "neither an existing folder nor file.py:factory"),
        (["--text", "the cat", "--tokenizer", "TOKENIZER", "--input", "x.npy"], "either --input"),
        (["--text", "the cat", "--tokenizer", "TOKENIZER", "--target", "9"], "--target 9 is out of range"),
    ],
    ids=["no-tokenizer", "no-text", "empty-text", "missing-folder", "text-and-input", "target-range"],
)
def test_bad_text_arguments_are_one_line_and_exit_2(files, capsys, extra, message):
    extra = [str(files / "tokenizer") if item == "TOKENIZER" else item for item in extra]
    assert main(["explain", f"{files / 'models.py'}:language_model", *extra]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_text_needs_a_model_and_a_matching_vocabulary(files, capsys):
    assert main(["explain", "--text", "the cat", "--tokenizer", str(files / "tokenizer")]) == 2
    assert "needs a text model" in capsys.readouterr().err
    assert main(["explain", f"{files / 'models.py'}:small_vocabulary_model", "--text", "the dog",
                 "--tokenizer", str(files / "tokenizer")]) == 2
    assert "embedding has 4 rows" in capsys.readouterr().err


def test_tokenize_both_tokenizer_kinds_and_unknown_objects(files):
    folder = load_tokenizer(str(files / "tokenizer"))
    factory = load_tokenizer(f"{files / 'tokenizer.py'}:words")
    for tokenizer in (folder, factory):
        ids, tokens = tokenize(tokenizer, "the mat dogs")
        assert ids.tolist() == [[2, 6, 1]] and tokens == ["the", "mat", "[UNK]"]
    with pytest.raises(InputError, match="expected a transformers tokenizer"):
        tokenize(object(), "the mat")

    class Silent:
        """Drops every word: a tokenizer that leaves nothing to explain."""

        def encode(self, text):
            return type("Encoding", (), {"ids": [], "tokens": []})()

    with pytest.raises(InputError, match="no tokens"):
        tokenize(Silent(), "the mat")

def test_text_target_picks_class_or_last_position_and_rejects_other_shapes():
    index, select, kind = text_target(torch.tensor([[0.5, 2.0, 1.0]]), None)
    assert (index, kind) == (1, "class") and select(torch.tensor([[0.5, 2.0, 1.0]])).item() == 2.0
    with pytest.raises(InputError, match="must return"):
        text_target(torch.zeros(1, 2, 3, 4), None)


def test_text_saves_relevance_titles_the_map_and_refuses_input_shape(files, drawn, tmp_path, capsys, monkeypatch):
    from opwise.attribution import pictures

    titles = []
    original = pictures.token_heatmap
    monkeypatch.setattr(pictures, "token_heatmap",
                        lambda *a, **k: titles.append(original(*a, **k).texts[-1].get_text()))
    saved = tmp_path / "r.npy"
    code = main(["explain", f"{files / 'models.py'}:language_model", "--text", "the cat sat", "--tokenizer",
                 str(files / "tokenizer"), "--save", str(saved), "--out", str(tmp_path / "t.png")])
    assert code == 0, capsys.readouterr().err
    import numpy

    assert numpy.load(saved).shape == (1, 3)
    assert "attn-lrp" in titles[0] and "next token" in titles[0] and "logit" in titles[0]
    code = main(["explain", f"{files / 'models.py'}:language_model", "--text", "the cat", "--tokenizer",
                 str(files / "tokenizer"), "--input-shape", "1,2"])
    assert code == 2 and "--input-shape does not apply to --text" in capsys.readouterr().err
