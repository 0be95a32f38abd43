"""decode.py with hidden transfer: lossless greedy and sampling, the drafts decoding computes equal
the training pass's, EOS and the token limit inside an accepted path, the KV cache after every
step, the up-front length check, the command line."""
import functools
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import decode
from decode import Sampler, check_length, generate_ar, generate_tree
from helpers import (P_FAIL, accept_hist, assert_drafts_as_in_training, chi_square_p, decoding_drafts,
                     exact_joint, noisy_drafter, noisy_medusa, prompt_of, randomize, tiny_model)
from model import KVCache, ModelArgs, Transformer
from transfer import drafts_for_text, new_drafter, restrict_vocab, save_drafter
from tree import build_tree, clip, parse_tree

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = [[0], [1], [3], [0, 0], [0, 2], [1, 0], [0, 0, 0], [0, 0, 1], [0, 2, 0], [0, 0, 0, 0]]


def tree_spec(name, k):
    if name == "full":
        return "full-" + "x".join("3211"[:k])  # every top-3 / top-2 / top-1 / top-1 combination
    return json.dumps(clip(CUSTOM, k)) if name == "custom" else name


# ----------------------------------------------------------------------------- greedy is lossless

@functools.cache  # every tree is checked against the same references: compute them once
def greedy_case(gqa):
    """A model, and per (k, transfer layer) a noisy drafter and two prompts with their plain greedy output."""
    model = tiny_model(seed=1 + gqa, n_kv_heads=1 if gqa else 4)
    L, cases = model.args.n_layers, []
    for k in (1, 2, 4):
        for layer in (1, L - 1):
            drafter = noisy_drafter(model, k, layer, seed=10 * k + layer)
            for r in range(2):
                n = 1 + (3 * k + 5 * layer + 4 * r) % 10  # prompt lengths 1..10
                prompt = prompt_of(n, 32, seed=100 * k + 10 * layer + r)
                cases.append((k, layer, drafter, prompt, generate_ar(model, prompt, 20, Sampler())[0]))
    return model, cases


@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("tree", ["root", "chain", "small", "medium", "wide", "dynamic-8", "custom", "full"])
def test_greedy_equals_plain_decoding(tree, gqa):
    # pins losslessness: hidden-transfer greedy == plain greedy, token for token, for any drafter and tree
    model, cases = greedy_case(gqa)
    multi = 0
    for k, layer, drafter, prompt, want in cases:
        got, stats = generate_tree(model, drafter, prompt, 20, Sampler(), tree_spec(tree, k))
        assert got == want, (k, layer, prompt)
        multi += sum(c for n, c in accept_hist(got, stats).items() if n > 1)
    if tree == "root":
        assert multi == 0  # no drafts, one token per step
    else:
        assert multi > 0  # some steps accepted drafts: acceptance was exercised


@functools.cache
def eos_and_limit_cases():
    """[(model, drafter, prompt, output, chunks)]: greedy runs whose steps emitted several tokens."""
    model, cases = tiny_model(seed=5), []
    for s in range(20):
        drafter = noisy_drafter(model, 4, 1, seed=s)
        prompt = prompt_of(1 + s % 7, 32, seed=s)
        chunks = []
        out, _ = generate_tree(model, drafter, prompt, 30, Sampler(), "small", on_tokens=chunks.append)
        cases.append((model, drafter, prompt, out, chunks))
    return cases


@pytest.mark.parametrize("tree", ["chain", "small", "full-3x2x2x1"])
def test_replay_takes_the_steps_decoding_takes(tree):
    # pins analyze.simulated_tau, with which (e) bounds tau by tree: greedy decoding replayed offline on
    # the model's own greedy text emits, step by step, what generate_tree emits; from the same position
    # a full tree holding another's paths never accepts less (later steps start elsewhere)
    from analyze import simulated_tau
    model, cases = greedy_case(False)
    longest = 0
    for k, layer, drafter, prompt, want in cases:
        if k != 4:
            continue
        steps = []
        generate_tree(model, drafter, prompt, 20, Sampler(), tree, on_tokens=lambda new: steps.append(len(new)))
        text = torch.tensor([prompt + want])
        replay = simulated_tau(model, drafter, [text], len(prompt), (tree, "small"))
        got = replay[tree][1][0]
        assert got and got == steps[1:len(got) + 1]  # steps[0]: the prefill's pass, one token
        longest = max(longest, *got)
        if tree.startswith("full"):
            assert got[0] >= replay["small"][1][0][0]
    assert longest >= 3  # steps that accepted drafts, not only the model's own token


def test_ratio_interval_is_the_paired_bootstrap():
    # pins (e)'s error bar: resampling whole sequences of both drafters together, the interval holds the
    # ratio, is a point when the two drafters step alike, and narrows with more sequences of the same kind
    from analyze import ratio_interval
    a = [[2, 1, 3], [1, 1], [3, 2, 1, 2], [1, 2]]
    b = [[1, 1, 2], [1, 1], [2, 1, 1, 1], [1, 1]]
    tau = lambda x: sum(map(sum, x)) / sum(map(len, x))
    lo, hi = ratio_interval(a, b)
    assert lo < tau(a) / tau(b) < hi and lo > 1
    assert ratio_interval(a, a) == (1.0, 1.0)
    lo8, hi8 = ratio_interval(a * 8, b * 8)
    assert hi8 - lo8 < (hi - lo) / 2
    assert ratio_interval(a, b) == (lo, hi)  # seeded: the same interval every run


def test_eos_inside_an_accepted_path():
    # pins the stop at an EOS that is not the last token of its step: same ids as plain decoding, EOS last
    found = 0
    for model, drafter, prompt, out, chunks in eos_and_limit_cases():
        start = 0
        for chunk in chunks:
            for i, tok in enumerate(chunk[:-1]):  # a token followed by more tokens of the same step
                if tok not in out[: start + i]:   # its first occurrence: plain decoding stops here
                    want, _ = generate_ar(model, prompt, 30, Sampler(), eos_ids={tok})
                    assert want == out[: start + i + 1]
                    got, stats = generate_tree(model, drafter, prompt, 30, Sampler(), "small", eos_ids={tok})
                    assert got == want
                    accept_hist(got, stats)
                    found += 1
                    break
            start += len(chunk)
    assert found >= 3


def test_token_limit_inside_an_accepted_path():
    # pins the stop at --max-new-tokens falling in the middle of a step's accepted path
    found = 0
    for model, drafter, prompt, out, chunks in eos_and_limit_cases():
        start = 0
        for chunk in chunks:
            if len(chunk) >= 2 and start > 0:
                limit = start + 1  # keep only the first token of this step
                got, stats = generate_tree(model, drafter, prompt, limit, Sampler(), "small")
                assert got == generate_ar(model, prompt, limit, Sampler())[0] == out[:limit]
                accept_hist(got, stats)
                found += 1
                break
            start += len(chunk)
    assert found >= 3


# ----------------------------------------------------------------------------- the drafts themselves

@pytest.mark.parametrize("tree", ["chain", "small", "wide", "dynamic-8", "custom"])
def test_drafts_equal_the_training_pass(monkeypatch, tree):
    # pins what losslessness cannot see: at every step, the drafts decoding reads off its one pass
    # (the accepted node's pseudo tokens, on top of the KV cache, inside a tree) equal the drafts
    # drafts_for_text (the training pass over the whole text) computes at that node's position.
    # A pseudo token at the wrong position, seeing a node off its path, or drafts read off
    # another node than the accepted one all change them.
    model = tiny_model(seed=3)
    moved = 0
    for k, layer in [(1, 2), (3, 1), (4, 2)]:
        drafter = noisy_drafter(model, k, layer, seed=k)
        prompt = prompt_of(2 + k, 32, seed=k)
        out, seen = decoding_drafts(monkeypatch, model, drafter, prompt, 30, tree_spec(tree, k))
        assert out == generate_ar(model, prompt, 30, Sampler())[0]
        assert_drafts_as_in_training(model, drafter, prompt, out, seen)
        positions = [j for j, _ in seen]
        moved += sum(b - a > 1 for a, b in zip(positions, positions[1:]))  # steps that accepted drafts
    assert moved >= 3


@pytest.mark.parametrize("tree,spawn", [("small", 1), ("small", 3), ("wide", 2), ("dynamic-8", 2), ("chain", 1)])
def test_pseudo_tokens_on_the_first_nodes_only(monkeypatch, tree, spawn):
    # generate_tree(spawn=n): pseudo tokens on the first n nodes of each tree only. Still lossless,
    # and a step that ends on a node without them drafts from its deepest ancestor with them: D_{s+1}..D_k
    # of that ancestor, s levels up, as the training pass computes them there (a shallower next tree).
    model = tiny_model(seed=3)
    counts = Counter()
    for k, layer in [(3, 1), (4, 2)]:
        drafter = noisy_drafter(model, k, layer, seed=k)
        prompt = prompt_of(2 + k, 32, seed=k)
        out, seen = decoding_drafts(monkeypatch, model, drafter, prompt, 40, tree_spec(tree, k), spawn)
        assert out == generate_ar(model, prompt, 40, Sampler())[0]
        assert_drafts_as_in_training(model, drafter, prompt, out, seen)
        counts.update(k - len(rows) for _, rows in seen)
    assert counts[0] >= 3 and sum(n for s, n in counts.items() if s > 0) >= 2, counts  # both kinds of step


@pytest.mark.parametrize("kind,tree,spawn", [("hidden-transfer", "chain", None), ("hidden-transfer", "small", 2),
                                             ("hidden-transfer", "dynamic-8", None), ("medusa", "small", None)])
def test_draft_vocabulary(monkeypatch, kind, tree, spawn):
    # restrict_vocab: drafts from the n tokens the training text used most. Still lossless, and every
    # step's drafts are the full drafts (the training pass's, at that position) on those n tokens and
    # -inf on the rest, entry by entry: decoding proposes from the vocabulary and from nothing else.
    # Random counts leave some of the full drafts' top tokens out, so the restriction changes what is
    # drafted (a restriction that was not applied would show).
    model = tiny_model(seed=3, dtype=torch.float32)  # float32 on a CPU: the blocked head rows, as decoding runs them
    k, V, n = 3, model.args.vocab_size, 16
    drafter = (noisy_drafter(model, k, 1, seed=k) if kind == "hidden-transfer"
               else noisy_medusa(model, k, seed=k, lm_heads=False))
    drafter.token_counts = torch.randint(1, 1000, (V,), generator=torch.Generator().manual_seed(0))
    vocab = sorted(sorted(range(V), key=lambda i: (-drafter.token_counts[i], i))[:n])  # ties: lower ids first
    others = [i for i in range(V) if i not in vocab]
    prompt = prompt_of(5, V, seed=1)
    want = generate_ar(model, prompt, 30, Sampler())[0]
    with torch.no_grad():
        _, full = drafts_for_text(model, drafter, torch.tensor([prompt + want]))  # (1, T, k, V) every token
    restrict_vocab(drafter, model, n)
    assert drafter.vocab_head.ids.tolist() == vocab
    out, seen = decoding_drafts(monkeypatch, model, drafter, prompt, 30, tree, spawn)
    assert out == want
    changed = 0
    for j, rows in seen:
        s = k - rows.shape[0]  # rows drafted s levels above the accepted node j (spawn)
        assert_close(rows[:, vocab], full[0, j - s, s:, vocab], rtol=1e-5, atol=1e-5)
        assert torch.isneginf(rows[:, others]).all()
        changed += not torch.equal(rows.argmax(-1), full[0, j - s, s:].argmax(-1))
    assert changed >= 2
    restrict_vocab(drafter, model, 0)  # 0, or n >= V: the whole vocabulary again
    assert drafter.vocab_head is None and restrict_vocab(drafter, model, V).vocab_head is None


def test_draft_vocabulary_errors():
    # no counts to choose from (an untrained drafter, an older file), or heads with LM heads of their
    # own: a clear error naming the fix, never a silent full-vocabulary run
    model = tiny_model(dtype=torch.float32)
    with pytest.raises(ValueError, match="no token counts .*train.py count-tokens.*--draft-vocab 0"):
        restrict_vocab(noisy_drafter(model, 2, 1), model, 8)
    own = new_drafter("medusa", model, 2)
    own.token_counts = torch.ones(model.args.vocab_size, dtype=torch.long)
    with pytest.raises(ValueError, match="LM heads of their own"):
        restrict_vocab(own, model, 8)


# ----------------------------------------------------------------------------- the KV cache

@pytest.mark.parametrize("tree,k,layer,seed", [("small", 3, 1, 3), ("wide", 2, 2, 3), ("dynamic-8", 4, 1, 3),
                                               ("small", 4, 1, 1), ("small", 4, 1, 5)])
def test_cache_equals_plain_forward_after_every_step(monkeypatch, tree, k, layer, seed):
    # pins the cache invariant: after each commit, slots [0, length) == a plain forward of the accepted tokens
    model = tiny_model(seed=7)
    drafter = noisy_drafter(model, k, layer, seed=seed)
    snaps, real_commit = [], KVCache.commit

    def commit(cache, keep=None):
        real_commit(cache, keep)
        n = cache.length
        snaps.append((n, None if keep is None else list(keep),
                      cache.k[:, :, :, :n].clone(), cache.v[:, :, :, :n].clone()))
    monkeypatch.setattr(KVCache, "commit", commit)
    prompt = prompt_of(6, 32, seed=9)
    out, _ = generate_tree(model, drafter, prompt, 40, Sampler(), tree)
    monkeypatch.undo()

    # Greedy decoding is lossless, so every accepted path lies on the model's greedy continuation,
    # also the part of the last step's path the token limit cut off
    seq = prompt + generate_ar(model, prompt, 40 + k, Sampler())[0]
    assert seq[:len(prompt) + len(out)] == prompt + out and len(snaps) >= 10
    for n, keep, k_cached, v_cached in snaps:
        ref = model.new_cache(max_len=n)
        with torch.no_grad():
            model(torch.tensor([seq[:n]]), cache=ref)
        torch.testing.assert_close(k_cached, ref.k, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v_cached, ref.v, rtol=1e-12, atol=1e-12)
    # the last commit holds all the tokens fed (everything but the final token, which no pass has
    # fed), and, when the token limit cut the last step, the accepted tokens past the limit
    assert len(prompt) + len(out) - 1 <= snaps[-1][0] <= len(prompt) + len(out) - 1 + k
    # the test saw paths that had to be moved: accepted nodes that were not the first pending slots
    assert any(keep is not None and keep != list(range(len(keep))) for _, keep, _, _ in snaps)


# ----------------------------------------------------------------------------- sampling is exact

V_SMALL = 6
SAMPLE_TREE = "[[0],[1],[2],[0,0],[0,1],[1,0],[2,0]]"  # k=2: depth-1 ranks 0..2, four depth-2 nodes


def sampling_setup():
    model = tiny_model(seed=11, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V_SMALL,
                       hidden_dim=32, max_seq_len=32)
    with torch.no_grad():
        model.output.weight.mul_(0.5)  # a spread-out distribution: many outcomes to compare
    return model, noisy_drafter(model, 2, 1, seed=0, scale=0.3), [3]


def sample_counts(model, drafter, prompt, rule, n):
    counts = torch.zeros(V_SMALL, V_SMALL, V_SMALL, dtype=torch.float64)
    for seed in range(n):  # fixed seeds: the test is deterministic
        out, _ = generate_tree(model, drafter, prompt, 3, Sampler(*rule, seed=seed), SAMPLE_TREE)
        counts[tuple(out)] += 1
    return counts


@pytest.mark.parametrize("rule,n", [((1.0, 0, 1.0), 2500), ((1.0, 3, 1.0), 1200), ((0.8, 0, 0.8), 1200)],
                         ids=["temperature", "top-k", "top-p"])
def test_sampling_matches_the_model(monkeypatch, rule, n):
    # pins exactness: the joint law of the first three tokens equals the model's, by enumeration
    model, drafter, prompt = sampling_setup()
    joint = exact_joint(model, prompt, rule)
    paths, real_verify = Counter(), decode.verify

    def recording_verify(*args):
        path, tok = real_verify(*args)
        paths[len(path)] += 1
        return path, tok
    monkeypatch.setattr(decode, "verify", recording_verify)
    counts = sample_counts(model, drafter, prompt, rule, n)
    assert counts[joint == 0].sum() == 0  # nothing the warped model forbids
    assert chi_square_p(counts, joint, n) > P_FAIL
    # every branch of the rule ran: a depth-2 child accepted, a depth-1 child accepted, and (unless
    # top-k/top-p leave about as few tokens as the tree has children) all children rejected
    assert paths[3] > 50 and paths[2] > 50 and paths[1] > (50 if rule == (1.0, 0, 1.0) else -1), paths


def wrong_verify_argmax(tree, tokens, logits, sampler):
    """A deliberately wrong rule: a child that is its parent's most likely token is always accepted."""
    node, path = 0, [0]
    while True:
        residual = sampler.probs(logits[node])
        best = int(residual.argmax())
        for c in tree.children(node).tolist():
            tok = int(tokens[c])
            if tok == best or sampler.uniform() < residual[tok]:
                node = c
                break
            residual[tok] = 0.0
            residual /= residual.sum()
        else:
            return path, sampler.sample(residual)
        path.append(node)


def wrong_verify_no_residual(tree, tokens, logits, sampler):
    """A subtler wrong rule: after rejections, sample from p itself instead of the residual."""
    node, path = 0, [0]
    while True:
        p = sampler.probs(logits[node])
        for c in tree.children(node).tolist():
            if sampler.uniform() < p[int(tokens[c])]:
                node = c
                break
        else:
            return path, sampler.sample(p)
        path.append(node)


@pytest.mark.parametrize("wrong", [wrong_verify_argmax, wrong_verify_no_residual])
def test_sampling_test_has_power(monkeypatch, wrong):
    # pins that the chi-square test above would catch a wrong acceptance rule
    model, drafter, prompt = sampling_setup()
    rule, n = (1.0, 0, 1.0), 600
    monkeypatch.setattr(decode, "verify", wrong)
    counts = sample_counts(model, drafter, prompt, rule, n)
    assert chi_square_p(counts, exact_joint(model, prompt, rule), n) < P_FAIL


# ----------------------------------------------------------------------------- the length check

@pytest.mark.parametrize("tree,k", [("small", 4), ("chain", 2), ("dynamic-8", 3), ("root", 2)])
def test_length_check_is_enough_at_the_boundary(tree, k):
    # pins check_length's lookahead for hidden transfer: a request it accepts runs to the end, one more is refused
    model = tiny_model(seed=2, max_seq_len=40)
    drafter = noisy_drafter(model, k, 1)
    depth = k if tree.startswith("dynamic") else build_tree(parse_tree(tree, k)).max_depth
    prompt = prompt_of(7, 32, seed=1)
    max_new = 40 - len(prompt) - (depth + k)
    check_length(model, len(prompt), max_new, depth + k)  # accepted ...
    out, _ = generate_tree(model, drafter, prompt, max_new, Sampler(), tree)  # ... and it fits
    assert out == generate_ar(model, prompt, max_new, Sampler())[0]
    with pytest.raises(ValueError, match="more than the model's context of 40"):
        check_length(model, len(prompt), max_new + 1, depth + k)


# ----------------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model with the shipped tokenizer's 4096 pieces and a 64-token context."""
    path = tmp_path_factory.mktemp("tiny")
    model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=4096,
                                  hidden_dim=64, max_seq_len=64))
    randomize(model, 3).save_pretrained(str(path))
    shutil.copyfile(ROOT / "checkpoints" / "shakespeare" / "tokenizer.model", path / "tokenizer.model")
    return path


def run_cli(ckpt, capsys, *argv):
    decode.main(["--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float64", *argv])
    return json.loads(capsys.readouterr().out)


AR_FIELDS = {"method", "prompt", "prompt_ids", "text", "token_ids", "stopped", "steps", "tokens_per_step",
             "seconds", "tokens_per_second"}


def test_cli_json_contract_and_losslessness(ckpt, capsys):
    # pins the --json contract, and that hidden transfer with an untrained drafter equals plain decoding
    common = ["--prompt", "ROMEO:", "--max-new-tokens", "24", "--json"]
    ar = run_cli(ckpt, capsys, *common, "--method", "ar")
    ht = run_cli(ckpt, capsys, *common, "--method", "hidden-transfer", "--drafter", "init", "--k", "3",
                 "--layer", "1", "--tree", "medium")
    assert set(ar) == AR_FIELDS
    assert AR_FIELDS | {"accept_hist"} <= set(ht)
    assert set(ht) - AR_FIELDS <= {"accept_hist", "tree", "k", "layer", "spawn", "drafter", "draft_vocab"}
    assert ht["draft_vocab"] == 4096  # an init drafter: every token
    assert ht["token_ids"] == ar["token_ids"] and ht["text"] == ar["text"] and len(ar["token_ids"]) >= 1
    assert ar["prompt_ids"] == ht["prompt_ids"] and ar["prompt_ids"][0] == 1  # BOS included
    assert ar["method"] == "ar" and ht["method"] == "hidden-transfer"
    n = len(ht["token_ids"])
    assert ar["steps"] == n - 1
    assert sum(int(a) * c for a, c in ht["accept_hist"].items()) == n - 1
    assert sum(ht["accept_hist"].values()) == ht["steps"]
    if ht["steps"]:
        assert ht["tokens_per_step"] == pytest.approx((n - 1) / ht["steps"])


def test_cli_draft_vocabulary(ckpt, capsys, tmp_path):
    # pins --draft-vocab and its default: decode.json's draft vocabulary applies to a drafter that has
    # token counts and quietly not to one without (an older file), where asking for it by flag is an error
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpt, folder)
    model = Transformer.from_pretrained(str(folder))
    drafter = noisy_drafter(model, 3, 1)
    save_drafter(drafter, model, str(folder / "hidden_transfer.safetensors"))  # no counts
    (folder / "decode.json").write_text(json.dumps({"tree": "small", "draft_vocab": 256}))
    common = ["--prompt", "ROMEO:", "--max-new-tokens", "24", "--json"]
    ar = run_cli(folder, capsys, *common, "--method", "ar")
    assert run_cli(folder, capsys, *common)["draft_vocab"] == 4096
    with pytest.raises(SystemExit, match="no token counts"):
        run_cli(folder, capsys, *common, "--draft-vocab", "256")
    drafter.token_counts = torch.arange(4096)  # the highest ids counted most
    save_drafter(drafter, model, str(folder / "hidden_transfer.safetensors"))
    for flag, n in [([], 256), (["--draft-vocab", "512"], 512), (["--draft-vocab", "0"], 4096)]:
        ht = run_cli(folder, capsys, *common, *flag)
        assert ht["draft_vocab"] == n and ht["token_ids"] == ar["token_ids"]
    own = new_drafter("medusa", model, 2)  # Medusa-1: LM heads of its own, counts or not
    own.token_counts = drafter.token_counts
    save_drafter(own, model, str(folder / "medusa.safetensors"))
    assert run_cli(folder, capsys, *common, "--method", "medusa")["draft_vocab"] == 4096
    with pytest.raises(SystemExit, match="LM heads of their own"):
        run_cli(folder, capsys, *common, "--method", "medusa", "--draft-vocab", "256")


def test_cli_length_refused_up_front(ckpt, capsys, monkeypatch):
    # pins the up-front refusal, for plain decoding and for hidden transfer's tree + drafts lookahead
    from model import Tokenizer
    prompt = "ROMEO: But soft, what light through yonder window breaks?"
    n = len(Tokenizer(str(ckpt)).encode(prompt))

    def no_work(*a, **kw):
        raise AssertionError("generation started")
    monkeypatch.setattr(decode, "generate_ar", no_work)
    monkeypatch.setattr(decode, "generate_tree", no_work)
    with pytest.raises(SystemExit, match=rf"prompt \({n} tokens\).*more than the model's context of 64"):
        decode.main(["--checkpoint", str(ckpt), "--device", "cpu", "--prompt", prompt, "--method", "ar",
                     "--max-new-tokens", str(64 - n + 1)])
    assert capsys.readouterr().out == ""  # refused before anything is printed, the prompt included
    # fits for plain decoding, not with tree depth 4 + k=4 pseudo positions
    ht = ["--checkpoint", str(ckpt), "--device", "cpu", "--prompt", prompt, "--method", "hidden-transfer",
          "--drafter", "init", "--k", "4", "--tree", "small", "--max-new-tokens", str(64 - n)]
    with pytest.raises(SystemExit, match=r"\+ 8 positions of tree and drafts.*more than the model's context"):
        decode.main(ht)
    assert capsys.readouterr().out == ""
    monkeypatch.undo()
    assert run_cli(ckpt, capsys, "--prompt", prompt, "--method", "ar", "--max-new-tokens", str(64 - n),
                   "--json")["token_ids"]


@pytest.mark.parametrize("argv,message", [
    (["--max-new-tokens", "-1"], "--max-new-tokens must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--max-new-tokens", "ten"], "invalid int value"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--top-k", "-1"], "--top-k must be >= 0"),
    (["--k", "0"], "--k must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--spawn", "0"], "--spawn must be >= 1"),
    (["--draft-vocab", "-1"], "--draft-vocab must be >= 0"),
    (["--method", "ar", "--draft-vocab", "8"], "--draft-vocab applies to --method hidden-transfer or medusa"),
    (["--method", "beam"], "invalid choice"),
    (["--dtype", "float8"], "invalid choice"),
])
def test_cli_argparse_errors(ckpt, capsys, argv, message):
    # pins that each bad flag value exits with argparse's code 2 and says what is wrong
    with pytest.raises(SystemExit) as e:
        decode.main(["--checkpoint", str(ckpt), "--device", "cpu", *argv])
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


HT = ["--method", "hidden-transfer", "--drafter", "init", "--k", "4"]


@pytest.mark.parametrize("argv,message", [
    (HT + ["--tree", "bogus"], "unknown tree 'bogus'"),
    (HT + ["--tree", "[[0, 0]]"], "has no parent"),
    (HT + ["--tree", "[[0], [0]]"], "appears twice"),
    (HT + ["--tree", "[[-1]]"], "non-negative"),
    (HT + ["--tree", "[[0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0]]"], "depth 5 > k=4"),
    (HT + ["--tree", "[[0]"], "could not parse"),
    (HT + ["--tree", "[]"], None),  # valid: the root alone
    (HT + ["--tree", "dynamic-x"], "dynamic-N"),
    (HT + ["--tree", "dynamic--2"], "dynamic-N"),
    (HT + ["--tree", "dynamicfoo"], "dynamic-N"),
    (HT + ["--tree", "dynamic-0"], "dynamic-N"),
    (HT + ["--layer", "2"], "transfer layer 2"),
    (HT + ["--draft-vocab", "8"], "no token counts"),
    (["--method", "hidden-transfer", "--drafter", "missing.safetensors"], "not found"),
])
def test_cli_tree_and_drafter_errors(ckpt, capsys, argv, message):
    # pins a clear SystemExit message (no traceback) for every bad tree spec, layer and drafter file
    full = ["--checkpoint", str(ckpt), "--device", "cpu", "--max-new-tokens", "4", "--json", *argv]
    if message is None:
        decode.main(full)
        out = json.loads(capsys.readouterr().out)
        assert out["steps"] == len(out["token_ids"]) - 1  # the root tree: one token per step
        return
    with pytest.raises(SystemExit) as e:
        decode.main(full)
    assert isinstance(e.value.code, str) and e.value.code.startswith("error:")
    assert re.search(message, e.value.code)


def test_cli_refuses_a_file_that_is_not_a_drafter(ckpt):
    # pins that --drafter pointing at the model's own weights is refused with a clear message
    with pytest.raises(SystemExit, match="not a drafter"):
        decode.main(["--checkpoint", str(ckpt), "--device", "cpu", "--method", "hidden-transfer",
                     "--drafter", str(ckpt / "model.safetensors")])
