"""Explain a Hugging Face causal language model's next token with AttnLRP, as a token heatmap.

The model has random weights and the tokenizer is built here from a word list, so nothing is downloaded;
with a real model, use AutoModelForCausalLM / AutoTokenizer.from_pretrained(folder) instead.
Run: python examples/explain_language_model.py
"""

import sys

import torch

import opwise
from opwise.attribution import token_heatmap

try:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:
    print("this example needs transformers and tokenizers: pip install transformers")
    sys.exit(0)

words = "[UNK] the cat sat on mat a dog ran to park and".split()
tokenizer = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="[UNK]"))
tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()

torch.manual_seed(0)
config = GPT2Config(vocab_size=len(words), n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
model = GPT2LMHeadModel(config).eval()

encoding = tokenizer.encode("the cat sat on the")
ids = torch.tensor([encoding.ids])
with torch.no_grad():
    next_token = int(model(ids).logits[0, -1].argmax())

explanation = opwise.explain(model, ids, target=lambda logits: logits[:, -1, next_token], composite="attn-lrp")
relevance = explanation.relevance[0]
for token, value in zip(encoding.tokens, relevance.tolist()):
    print(f"{token:>6} {value:+.4f}")
title = f"random GPT-2 · attn-lrp · next token {words[next_token]!r} · logit {float(explanation.explained_output[0]):.3g}"
token_heatmap(encoding.tokens, relevance, path="next_token.png", title=title)
print("token heatmap written to next_token.png")
