"""The shipped model and drafters: a pinned greedy continuation (a golden test, as
llama2.c has), and every method equal to plain decoding for 200 tokens in float32."""
import json
import os
import subprocess
import sys

import pytest

from decode import DEFAULT_PROMPT, SelfSpec, Sampler, generate_ar, generate_tree
from model import Tokenizer, Transformer
from transfer import load_drafter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "checkpoints", "shakespeare")
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_shakespeare.json")


@pytest.fixture(scope="module")
def shipped():
    model = Transformer.from_pretrained(CKPT)
    tok = Tokenizer(CKPT)
    prompt = tok.encode(DEFAULT_PROMPT)
    ref, _ = generate_ar(model, prompt, 200, Sampler(), tok.eos_ids)
    return model, tok, prompt, ref


def test_golden_greedy_continuation(shipped):
    """The shipped weights, tokenizer and plain decoding reproduce the pinned 200 tokens."""
    model, tok, prompt, ref = shipped
    golden = json.load(open(GOLDEN))
    assert golden["prompt"] == DEFAULT_PROMPT and prompt == golden["prompt_ids"]
    assert ref == golden["token_ids"]


@pytest.mark.parametrize("tree", ["small", "medium", "wide", "dynamic-12"])
def test_hidden_transfer_equals_plain(shipped, tree):
    model, tok, prompt, ref = shipped
    drafter = load_drafter(os.path.join(CKPT, "hidden_transfer.safetensors"), model, "hidden-transfer")
    out, stats = generate_tree(model, drafter, prompt, 200, Sampler(), tree, tok.eos_ids)
    assert out == ref
    assert (len(out) - 1) / stats["steps"] > 1.5  # the trained drafter really drafts


@pytest.mark.parametrize("tree", ["small", "wide"])
def test_medusa_equals_plain(shipped, tree):
    model, tok, prompt, ref = shipped
    drafter = load_drafter(os.path.join(CKPT, "medusa.safetensors"), model, "medusa")
    out, _ = generate_tree(model, drafter, prompt, 200, Sampler(), tree, tok.eos_ids)
    assert out == ref


def test_self_spec_equals_plain(shipped):
    model, tok, prompt, ref = shipped
    out, _ = generate_tree(model, SelfSpec((2,), 3), prompt, 200, Sampler(), "chain", tok.eos_ids)
    assert out == ref


def test_default_command_is_hidden_transfer_and_equals_ar():
    """`python decode.py` as a user runs it, against `--method ar`."""
    def run(*flags):
        out = subprocess.run([sys.executable, "decode.py", "--json", "--max-new-tokens", "64", *flags],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    ht, ar = run(), run("--method", "ar")
    assert ht["method"] == "hidden-transfer" and ar["method"] == "ar"
    assert ht["token_ids"] == ar["token_ids"] and ht["text"] == ar["text"]
    assert ht["tokens_per_step"] > 1.5 and ar["tokens_per_step"] == 1.0
