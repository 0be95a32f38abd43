"""The shipped model and drafters: a pinned greedy continuation (a golden test, as
llama2.c has), every method equal to plain decoding for 200 tokens in float32, and the
drafts decoding computes equal to the training pass's (hidden transfer, Medusa) or to an
independently built layer-skipping model's (self-spec)."""
import json
import os
import subprocess
import sys

import pytest

from decode import DEFAULT_PROMPT, SelfSpec, Sampler, generate_ar, generate_tree
from helpers import assert_drafts_as_in_training, assert_skip_model_chain, decoding_drafts, self_spec_drafts_seen, skip_model
from model import Tokenizer, Transformer
from transfer import load_drafter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "checkpoints", "shakespeare")
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_shakespeare.json")
DRAFTERS = {"hidden-transfer": "hidden_transfer.safetensors", "medusa": "medusa.safetensors"}


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


@pytest.mark.parametrize("kind,tree", [("hidden-transfer", "medium"), ("hidden-transfer", "dynamic-12"),
                                       ("medusa", "small")])
def test_drafts_equal_the_training_pass(shipped, monkeypatch, kind, tree):
    # the drafts each step reads off its one pass equal drafts_for_text's at the accepted node
    # (float32: a pass over a tree on the KV cache and one over the whole text round differently)
    model, tok, prompt, ref = shipped
    drafter = load_drafter(os.path.join(CKPT, DRAFTERS[kind]), model, kind)
    out, seen = decoding_drafts(monkeypatch, model, drafter, prompt, 100, tree)
    assert out == ref[:100]
    assert_drafts_as_in_training(model, drafter, prompt, out, seen, rtol=0, atol=5e-4)


def test_self_spec_drafts_are_an_independent_skip_model_greedy_chain(shipped, monkeypatch):
    model, tok, prompt, ref = shipped
    out, seen = self_spec_drafts_seen(monkeypatch, model, SelfSpec((2,), 3), prompt, 60)
    assert out == ref[:60]
    assert_skip_model_chain(skip_model(model, (2,)), seen, 3, rtol=0, atol=5e-4)


def test_default_command_is_hidden_transfer_and_equals_ar():
    """`python decode.py` as a user runs it, against `--method ar` (the two processes run at once)."""
    runs = [subprocess.Popen([sys.executable, "decode.py", "--json", "--max-new-tokens", "64", *flags],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for flags in ([], ["--method", "ar"])]
    outs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outs]
    ht, ar = (json.loads(out) for out, _ in outs)
    assert ht["method"] == "hidden-transfer" and ar["method"] == "ar"
    assert ht["token_ids"] == ar["token_ids"] and ht["text"] == ar["text"]
    assert ht["tokens_per_step"] > 1.5 and ar["tokens_per_step"] == 1.0
