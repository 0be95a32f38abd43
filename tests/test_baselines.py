"""The baselines: Medusa heads and self-speculative decoding. Both are lossless (greedy output
equals plain decoding, sampling has the model's law), each drafts what it should (Medusa's drafts
equal the training pass's, self-spec's equal a layer-skipping model built independently), Medusa
heads learn, and their files round-trip."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import decode
from decode import Sampler, SelfSpec, generate_ar, generate_tree, parse_skip
from helpers import (P_FAIL, accept_hist, assert_drafts_as_in_training, assert_skip_model_chain, chi_square_p,
                     decoding_drafts, exact_joint, markov_text, noisy_medusa, prompt_of, self_spec_drafts_seen,
                     skip_model, tiny_model)
from model import ModelArgs, Transformer
from transfer import Medusa, draft_logits, drafter_loss, load_drafter, new_drafter, save_drafter

ROOT = Path(__file__).resolve().parents[1]


def baseline_model(seed=0, **over):
    """Random float64 Llama with 4 blocks whose output projections are halved, so that a model
    with a block skipped is a fair but imperfect guess of the full one."""
    return tiny_model(seed, residual=0.5, **(dict(n_layers=4) | over))


# ----------------------------------------------------------------------------- greedy is lossless

@pytest.mark.parametrize("tree", ["root", "chain", "small", "wide", "dynamic-8"])
def test_medusa_greedy_equals_plain_decoding(tree):
    # pins losslessness: Medusa greedy == plain greedy, token for token, for any heads and tree
    model = baseline_model(seed=1)
    multi = 0
    for k in (1, 3):
        drafter = noisy_medusa(model, k, seed=k)
        for r in range(3):
            prompt = prompt_of(1 + 4 * r, 32, seed=10 * k + r)
            want, _ = generate_ar(model, prompt, 25, Sampler())
            got, stats = generate_tree(model, drafter, prompt, 25, Sampler(), tree)
            assert got == want, (k, prompt)
            multi += sum(c for n, c in accept_hist(got, stats).items() if n > 1)
    assert (multi == 0) if tree == "root" else (multi > 0)  # drafts were accepted, except with no drafts


@pytest.mark.parametrize("skip,k,tree", [
    ((1,), 1, "chain"), ((2, 3), 2, "chain"), ((0,), 4, "chain"), ((3,), 3, "chain"), ((0, 1, 3), 4, "chain"),
    ((2,), 3, "small"), ((1,), 2, "dynamic-4"),
    ((3,), 3, "[[0]]"), ((3,), 3, "root"),  # trees shallower than the draft chain: a fed draft can be the root
])
def test_self_spec_greedy_equals_plain_decoding(skip, k, tree):
    # pins losslessness: self-spec greedy == plain greedy, for any skipped blocks, draft length and tree
    model = baseline_model(seed=2)
    hist = {}
    for r in range(3):
        prompt = prompt_of(1 + 4 * r, 32, seed=r)
        want, _ = generate_ar(model, prompt, 30, Sampler())
        got, stats = generate_tree(model, SelfSpec(skip, k), prompt, 30, Sampler(), tree)
        assert got == want, prompt
        for n, c in accept_hist(got, stats).items():
            hist[n] = hist.get(n, 0) + c
    if tree == "root":
        assert set(hist) == {1}
    else:  # both happened: drafts accepted, and drafts rejected (so the draft cache was rewound)
        assert any(n > 1 for n in hist) and any(n <= k for n in hist), hist


def method_cases():
    """(name, model, drafter, prompt, output, chunks): greedy runs whose steps emit several tokens."""
    model = baseline_model(seed=3)
    for s in range(6):
        prompt = prompt_of(1 + s, 32, seed=s)
        for name, drafter, tree in [("medusa", noisy_medusa(model, 3, seed=s), "wide"),
                                    ("self-spec", SelfSpec((1,), 4), "chain")]:
            chunks = []
            out, _ = generate_tree(model, drafter, prompt, 30, Sampler(), tree, on_tokens=chunks.append)
            yield name, model, drafter, tree, prompt, out, chunks


def test_eos_and_token_limit_inside_an_accepted_path():
    # pins the stop at an EOS or at the token limit that falls inside a step's accepted path
    found = {"medusa": 0, "self-spec": 0}
    for name, model, drafter, tree, prompt, out, chunks in method_cases():
        start = 0
        for chunk in chunks:
            tok = chunk[0]
            if len(chunk) >= 2 and start > 0 and tok not in out[:start]:
                # EOS: the first token of a multi-token step, seen for the first time
                want, _ = generate_ar(model, prompt, 30, Sampler(), eos_ids={tok})
                assert want == out[: start + 1]
                got, stats = generate_tree(model, drafter, prompt, 30, Sampler(), tree, eos_ids={tok})
                assert got == want
                accept_hist(got, stats)
                # the token limit: keep only the first token of this step
                got, stats = generate_tree(model, drafter, prompt, start + 1, Sampler(), tree)
                assert got == out[: start + 1]
                accept_hist(got, stats)
                found[name] += 1
                break
            start += len(chunk)
    assert min(found.values()) >= 2, found


# ----------------------------------------------------------------------------- the drafts themselves

@pytest.mark.parametrize("skip,k", [((1, 2), 3), ((0,), 2), ((3,), 4)])
def test_self_spec_drafts_are_an_independent_skip_model_greedy_chain(monkeypatch, skip, k):
    # pins the draft model and its cache: after every rewind, the drafts equal the greedy chain of a
    # Transformer built with only the kept blocks, run from scratch on the whole sequence
    # (losslessness alone would notice neither bad drafts nor a missing final norm)
    model = baseline_model(seed=4)
    prompt = prompt_of(5, 32, seed=1)
    out, seen = self_spec_drafts_seen(monkeypatch, model, SelfSpec(skip, k), prompt, 30)
    assert out == generate_ar(model, prompt, 30, Sampler())[0] and len(seen) >= 5
    assert_skip_model_chain(skip_model(model, skip), seen, k, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tree", ["chain", "small", "wide", "dynamic-8"])
def test_medusa_drafts_equal_the_training_pass(monkeypatch, tree):
    # pins where Medusa's drafts are read: the heads on the accepted node's final hidden state, equal
    # to what drafts_for_text (the training pass over the whole text) gives at that position
    model = baseline_model(seed=5)
    moved = 0
    for k in (1, 3):
        drafter = noisy_medusa(model, k, seed=2)
        prompt = prompt_of(4, 32, seed=k)
        out, seen = decoding_drafts(monkeypatch, model, drafter, prompt, 30, tree)
        assert out == generate_ar(model, prompt, 30, Sampler())[0]
        assert_drafts_as_in_training(model, drafter, prompt, out, seen)
        positions = [j for j, _ in seen]
        moved += sum(b - a > 1 for a, b in zip(positions, positions[1:]))  # steps that accepted drafts
    assert moved >= 3


def test_untrained_medusa_heads_are_the_base_lm_head():
    # pins the initialisation: identity ResBlocks and copies of the LM head, on the normed final state
    model = baseline_model(seed=6)
    drafter = new_drafter("medusa", model, 3).double()
    h = torch.randn(2, 5, 32, dtype=torch.float64)
    want = model.logits(h).unsqueeze(-2).expand(2, 5, 3, 32)
    assert_close(draft_logits(model, drafter, h), want, rtol=1e-6, atol=1e-6)  # float32 copies of the head


# ----------------------------------------------------------------------------- training

def test_medusa_loss_alignment():
    # pins the targets: head i at position j is scored against the token at j+i+1
    model = baseline_model(seed=7)
    drafter = new_drafter("medusa", model, 3).double()  # untrained: every head predicts the next token
    x = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nxt = model(x).argmax(-1)                                 # (B, T) base model's next token
        _, acc_data = drafter_loss(model, drafter, x, y)
        _, acc_self = drafter_loss(model, drafter, x)             # self-distillation
    for i in range(1, 4):
        assert acc_data[i - 1] == pytest.approx((nxt[:, :-i] == y[:, i:]).double().mean().item())
        assert acc_self[i - 1] == pytest.approx((nxt[:, :-i] == nxt[:, i:]).double().mean().item())


def test_medusa_training_lowers_the_loss():
    # pins that Medusa heads learn on a frozen base: held-out loss falls and head 1 beats chance
    V = 16
    model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V,
                                  hidden_dim=64, max_seq_len=64)).init_weights(0).eval().requires_grad_(False)
    base = {n: p.clone() for n, p in model.state_dict().items()}
    drafter = new_drafter("medusa", model, 2)
    held = markov_text(16, 33, V, seed=7)

    def held_out():
        with torch.no_grad():
            return drafter_loss(model, drafter, held[:, :-1], held[:, 1:])

    loss_before, _ = held_out()
    opt = torch.optim.AdamW(drafter.parameters(), lr=1e-2)
    for step in range(40):  # targets: the text's next tokens, j+2 and j+3 predictable from token j
        seq = markov_text(8, 33, V, seed=100 + step)
        loss, _ = drafter_loss(model, drafter, seq[:, :-1], seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss_after, acc = held_out()
    assert loss_after < 0.6 * loss_before, (loss_before, loss_after)
    assert acc[0] > 0.5, acc  # succ(succ(x_j)) with probability ~0.81; chance is 1/16
    assert all(torch.equal(p, base[n]) for n, p in model.state_dict().items())  # the base stayed frozen


# ----------------------------------------------------------------------------- files

def test_medusa_save_load_round_trip(tmp_path):
    # pins the file: same class, k and weights back; a file of the other kind is refused by name
    model = baseline_model(seed=8)
    drafter = noisy_medusa(model, 3, seed=1)
    path = str(tmp_path / "medusa.safetensors")
    save_drafter(drafter, model, path)
    back = load_drafter(path, model, "medusa")
    assert isinstance(back, Medusa) and back.k == 3 and back.kind == "medusa"
    for (n, p), (m, q) in zip(drafter.state_dict().items(), back.state_dict().items()):
        assert n == m and torch.equal(p, q)
    with pytest.raises(ValueError, match="holds a medusa drafter, not a hidden-transfer one"):
        load_drafter(path, model, "hidden-transfer")
    ht = str(tmp_path / "ht.safetensors")
    save_drafter(new_drafter("hidden-transfer", model, 2, 1), model, ht)
    with pytest.raises(ValueError, match="holds a hidden-transfer drafter, not a medusa one"):
        load_drafter(ht, model, "medusa")
    with pytest.raises(ValueError, match="hidden-transfer drafters only"):
        new_drafter("medusa", model, 2, layer=1)


# ----------------------------------------------------------------------------- --skip

@pytest.mark.parametrize("spec,n_layers,want", [
    ("2,3", 6, (2, 3)), ("2-4", 6, (2, 3, 4)), ("0, 2-3", 6, (0, 2, 3)), ("3,1,3", 6, (1, 3)),
    (None, 6, (2,)), (None, 2, (0,)), (None, 22, tuple(range(8, 13))),
])
def test_parse_skip(spec, n_layers, want):
    assert parse_skip(spec, n_layers) == want


@pytest.mark.parametrize("spec,message", [
    ("6", "block 6 does not exist"), ("0-5", "skips all 6 blocks"), ("3-2", "low-high"),
    ("", "0-based block indices"), ("-1", "0-based block indices"), ("a,b", "0-based block indices"),
])
def test_parse_skip_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_skip(spec, 6)


# ----------------------------------------------------------------------------- sampling is exact

V_SMALL = 6


@pytest.mark.parametrize("method", ["medusa", "self-spec"])
def test_sampling_matches_the_model(method):
    # pins exactness of sampling through both baselines: the law of the first three tokens is the model's
    model = baseline_model(seed=9, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V_SMALL,
                           hidden_dim=32, max_seq_len=32)
    with torch.no_grad():
        model.output.weight.mul_(0.5)  # a spread-out distribution: many outcomes to compare
    drafter, tree = ((noisy_medusa(model, 2, seed=0), "small") if method == "medusa"
                     else (SelfSpec((1,), 2), "chain"))
    prompt, n = [3], 1000
    counts, lengths = torch.zeros(V_SMALL, V_SMALL, V_SMALL, dtype=torch.float64), set()
    for seed in range(n):  # fixed seeds: the test is deterministic
        out, stats = generate_tree(model, drafter, prompt, 3, Sampler(1.0, seed=seed), tree)
        counts[tuple(out)] += 1
        lengths |= {int(a) for a in stats["accept_hist"]}
    assert {1, 2} <= lengths  # steps that accepted no draft and steps that accepted one
    assert chi_square_p(counts, exact_joint(model, prompt), n) > P_FAIL


# ----------------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model with the shipped tokenizer's 4096 pieces."""
    path = tmp_path_factory.mktemp("tiny")
    model = Transformer(ModelArgs(dim=32, n_layers=3, n_heads=2, n_kv_heads=1, vocab_size=4096,
                                  hidden_dim=64, max_seq_len=64)).init_weights(3)
    model.save_pretrained(str(path))
    shutil.copyfile(ROOT / "checkpoints" / "shakespeare" / "tokenizer.model", path / "tokenizer.model")
    return path


def run_cli(ckpt, capsys, *argv):
    decode.main(["--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float64", "--prompt", "ROMEO:",
                 "--max-new-tokens", "20", "--json", *argv])
    return json.loads(capsys.readouterr().out)


def test_cli_baselines_equal_plain_decoding(ckpt, capsys):
    # pins the --method medusa / self-spec command lines and their JSON fields
    ar = run_cli(ckpt, capsys, "--method", "ar")
    medusa = run_cli(ckpt, capsys, "--method", "medusa", "--drafter", "init", "--k", "3")
    spec = run_cli(ckpt, capsys, "--method", "self-spec", "--skip", "1", "--k", "3")
    assert medusa["token_ids"] == spec["token_ids"] == ar["token_ids"]
    assert (medusa["tree"], medusa["k"], medusa["drafter"]) == ("small", 3, "init")
    assert (spec["tree"], spec["k"], spec["skip"]) == ("chain", 3, [1])


@pytest.mark.parametrize("argv,message", [
    (["--method", "medusa"], "medusa.safetensors' not found"),
    (["--method", "medusa", "--drafter", "HT"], "holds a hidden-transfer drafter, not a medusa one"),
    (["--method", "self-spec", "--skip", "0-2"], "skips all 3 blocks"),
    (["--method", "self-spec", "--skip", "3"], "block 3 does not exist"),
])
def test_cli_errors(ckpt, argv, message):
    # pins a clear message, no traceback, for a missing or wrong-kind drafter file and a bad --skip
    ht = ckpt / "ht.safetensors"
    save_drafter(new_drafter("hidden-transfer", Transformer.from_pretrained(str(ckpt)), 2, 1),
                 Transformer.from_pretrained(str(ckpt)), str(ht))
    argv = [str(ht) if a == "HT" else a for a in argv]
    with pytest.raises(SystemExit, match=message):
        decode.main(["--checkpoint", str(ckpt), "--device", "cpu", "--max-new-tokens", "4", *argv])


@pytest.mark.parametrize("argv", [["--method", "ar", "--skip", "1"], ["--method", "medusa", "--layer", "1"],
                                  ["--method", "self-spec", "--drafter", "init"], ["--method", "medusa", "--spawn", "2"]])
def test_cli_flags_of_another_method(ckpt, capsys, argv):
    # pins that a flag the chosen method would ignore is refused instead
    with pytest.raises(SystemExit) as e:
        decode.main(["--checkpoint", str(ckpt), "--device", "cpu", *argv])
    assert e.value.code == 2 and "applies to --method" in capsys.readouterr().err
