"""transfer.py: the training mask and positions, pseudo states, the drafter loss, a short
training run, drafter checkpoints and their base fingerprint, and `python train.py drafter` end to end."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import train
from helpers import markov_text, noisy_drafter, randomize, tiny_model
from model import ModelArgs, Transformer
from transfer import (base_fingerprint, draft_logits, drafter_loss, drafts_for_text, load_drafter, new_drafter,
                      pseudo_hidden, restrict_vocab, save_drafter, spread, training_mask, training_positions)

ROOT = Path(__file__).resolve().parents[1]


def rand_tokens(B, T, vocab, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- mask and positions

def grid(rows):
    return torch.tensor([[c == "1" for c in r.replace(" ", "")] for r in rows])


def test_training_mask_by_hand():
    # pins every entry of the [real ; pseudo] mask for T=3, k=2 (pseudo (j, i) at 3 + 2j + i-1)
    expected = grid([
        "100 00 00 00",  # real 0
        "110 00 00 00",  # real 1
        "111 00 00 00",  # real 2
        "100 10 00 00",  # pseudo (0, 1)
        "100 11 00 00",  # pseudo (0, 2)
        "110 00 10 00",  # pseudo (1, 1)
        "110 00 11 00",  # pseudo (1, 2)
        "111 00 00 10",  # pseudo (2, 1)
        "111 00 00 11",  # pseudo (2, 2)
    ])
    assert torch.equal(training_mask(3, 2), expected)
    # pins positions: real j -> j, pseudo (j, i) -> j + i
    assert training_positions(3, 2).tolist() == [0, 1, 2, 1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("T,k", [(7, 3), (5, 1), (4, 5)])
def test_training_mask_brute_force(T, k):
    # pins the rule of docs/method.md, rebuilt entry by entry: pseudo (j, i) sees real <= j and
    # pseudo (j, 1..i); real tokens are causal and never see pseudo tokens
    def who(n):  # index -> ("real", j, 0) or ("pseudo", j, i)
        return ("real", n, 0) if n < T else ("pseudo", (n - T) // k, (n - T) % k + 1)

    mask, pos = training_mask(T, k), training_positions(T, k)
    assert mask.shape == (T + T * k, T + T * k) and mask.dtype == torch.bool
    for a in range(T + T * k):
        ka, ja, ia = who(a)
        assert pos[a] == ja + ia
        for b in range(T + T * k):
            kb, jb, ib = who(b)
            if ka == "real":
                want = kb == "real" and jb <= ja
            elif kb == "real":
                want = jb <= ja
            else:
                want = jb == ja and ib <= ia
            assert bool(mask[a, b]) == want, (a, b)


# ----------------------------------------------------------------------------- pseudo states

def test_pseudo_tokens_leave_real_logits_unchanged():
    # pins "real tokens never see pseudo tokens": the real rows of the [real ; pseudo] pass are a plain forward
    model = tiny_model()
    drafter = noisy_drafter(model, k=3, layer=1, scale=0.3)
    tokens = rand_tokens(2, 12, model.args.vocab_size)
    with torch.no_grad():
        real, pseudo = pseudo_hidden(model, drafter, tokens)
        assert_close(model.logits(real), model(tokens), rtol=1e-12, atol=1e-12)
    assert len(pseudo) == model.args.n_layers - 1 and pseudo[-1].shape == (2, 12, 3, model.args.dim)


@pytest.mark.parametrize("layer", [1, 2])
def test_each_pseudo_group_equals_running_it_alone(layer):
    # pins the training-mask semantics independently: group j = prefix 0..j + its own k pseudo tokens only
    model = tiny_model(seed=3, n_kv_heads=4)
    k, T = 3, 9
    drafter = noisy_drafter(model, k, layer, seed=4, scale=0.3)
    tokens = rand_tokens(2, T, model.args.vocab_size, seed=5)
    with torch.no_grad():
        _, pseudo = pseudo_hidden(model, drafter, tokens)  # list over blocks layer+1..L of (B, T, k, d)
        for j in range(T):
            n = j + 1
            h = model.run_blocks(model.embed(tokens[:, :n]), torch.arange(n), None, None, 0, layer)  # (B, n, d)
            ps = drafter(h[:, j])                                                                   # (B, k, d)
            mask = torch.zeros(n + k, n + k, dtype=torch.bool)
            for a in range(n + k):
                for b in range(n + k):
                    if a < n:
                        mask[a, b] = b <= a                  # real: causal
                    else:
                        mask[a, b] = b < n or n <= b <= a    # pseudo i: the whole prefix, pseudo 1..i
            pos = torch.cat([torch.arange(n), j + torch.arange(1, k + 1)])
            alone = model.run_blocks(torch.cat([h, ps], 1), pos, mask, None, layer, return_all=True)
            assert len(alone) == len(pseudo)
            for got, want in zip(pseudo, alone):
                assert_close(got[:, j], want[:, n:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["hidden-transfer", "medusa"])
def test_drafts_at_spawned_positions_equal_the_full_pass(kind):
    # pins --spawn: drafting at a few positions gives, there, what drafting at every position gives,
    # and the loss over them is the full loss restricted to them (same targets, same weights)
    model = tiny_model(seed=11)
    k, T = 3, 12
    drafter = (noisy_drafter(model, k, 1, seed=12, scale=0.3) if kind == "hidden-transfer"
               else new_drafter("medusa", model, k, lm_heads=False).double())
    tokens = rand_tokens(2, T, model.args.vocab_size, seed=13)
    spawn = torch.tensor([0, 4, 5, 9, 11])
    with torch.no_grad():
        real_all, all_ = drafts_for_text(model, drafter, tokens)               # (B, T, k, V)
        real, some = drafts_for_text(model, drafter, tokens, spawn)            # (B, 5, k, V)
        assert_close(real, real_all, rtol=1e-10, atol=1e-10)
        assert_close(some, all_[:, spawn], rtol=1e-10, atol=1e-10)
        loss, acc = drafter_loss(model, drafter, tokens, spawn=spawn)
        targets = model(tokens).argmax(-1)                                     # self-distillation
        w = [0.8 ** i for i in range(k)]
        want, hits = 0.0, []
        for i in range(1, k + 1):
            js = [j for j in spawn.tolist() if j + i < T]
            pred, tgt = all_[:, js, i - 1], targets[:, [j + i for j in js]]
            want += w[i - 1] * F.cross_entropy(pred.flatten(0, 1), tgt.flatten()).item()
            hits.append((pred.argmax(-1) == tgt).float().mean().item())
    assert loss.item() == pytest.approx(want / sum(w), rel=1e-6)  # the loss takes its CE in float32
    assert acc == pytest.approx(hits)
    with torch.no_grad():
        assert drafter_loss(model, drafter, tokens, spawn=torch.arange(T))[0].item() == pytest.approx(
            drafter_loss(model, drafter, tokens)[0].item(), rel=1e-12)


def test_drafter_loss_counts_only_scored_targets():
    # pins --draft-on answers: with `scored`, each offset's CE and accuracy average over the scored
    # targets only (by hand), an unscored target can be anything without changing the loss or its
    # gradient, and all scored is no mask at all
    model = tiny_model(seed=31)
    k, T, V = 3, 12, model.args.vocab_size
    drafter = noisy_drafter(model, k, 1, seed=32, scale=0.3)
    seq = rand_tokens(2, T + 1, V, seed=33)
    x, y = seq[:, :-1], seq[:, 1:]
    scored = torch.rand(2, T, generator=torch.Generator().manual_seed(34)) < 0.5   # (B, T) over the targets
    spawn = torch.tensor([0, 2, 3, 7, 8, 10])
    loss, acc = drafter_loss(model, drafter, x, y, spawn=spawn, scored=scored)
    with torch.no_grad():
        logits = model.logits(pseudo_hidden(model, drafter, x)[1][-1])              # (B, T, k, V)
    num, den = 0.0, 0.0
    for i in range(1, k + 1):
        ces, hits = [], []
        for b in range(2):
            for j in spawn.tolist():
                if j + i < T and scored[b, j + i]:
                    ces.append(F.cross_entropy(logits[b, j, i - 1], y[b, j + i]).item())
                    hits.append(float(logits[b, j, i - 1].argmax() == y[b, j + i]))
        assert 0 < len(ces) < 2 * len(spawn)  # some targets scored at each offset, some not
        num += 0.8 ** (i - 1) * sum(ces) / len(ces)
        den += 0.8 ** (i - 1)
        assert acc[i - 1] == pytest.approx(sum(hits) / len(hits))
    assert loss.item() == pytest.approx(num / den, rel=1e-6)

    other = torch.where(scored, y, (y + 1) % V)  # every unscored target changed
    grad = torch.autograd.grad(loss, drafter.proj.weight)[0]
    loss2 = drafter_loss(model, drafter, x, other, spawn=spawn, scored=scored)[0]
    assert loss2.item() == loss.item()
    assert torch.equal(torch.autograd.grad(loss2, drafter.proj.weight)[0], grad)
    assert drafter_loss(model, drafter, x, other, spawn=spawn)[0].item() != loss.item()  # the targets matter
    with torch.no_grad():
        assert drafter_loss(model, drafter, x, y, spawn=spawn, scored=torch.ones(2, T, dtype=torch.bool))[0].item() \
            == drafter_loss(model, drafter, x, y, spawn=spawn)[0].item()


def test_position_accuracy_by_hand_and_from_a_start():
    # pins analyze.position_accuracy, bench.py's draft accuracy: D_i made at position j is scored against
    # the model's own token at j+i+1, and with `starts` only the drafts made at j >= start count (a
    # chat: the answer's, from the prompt's last token on, not the prompt's)
    from analyze import position_accuracy
    model = tiny_model(seed=21)
    k, T = 3, 14
    drafter = noisy_drafter(model, k, 1, seed=22, scale=0.3)
    texts = [rand_tokens(1, T, model.args.vocab_size, seed=23), rand_tokens(1, T - 3, model.args.vocab_size, seed=24)]
    starts = [5, 2]
    with torch.no_grad():
        got = position_accuracy(model, drafter, texts, topk=(1, 2), starts=starts)
        hits, count = {1: [0] * k, 2: [0] * k}, [0] * k
        for x, j0 in zip(texts, starts):
            real, draft = drafts_for_text(model, drafter, x)
            target = model.logits(real).argmax(-1)[0]
            for j in range(j0, x.shape[1]):
                for i in range(1, k + 1):
                    if j + i < x.shape[1]:
                        count[i - 1] += 1
                        for n in (1, 2):
                            hits[n][i - 1] += int(target[j + i] in draft[0, j, i - 1].topk(n).indices)
        assert min(hits[1]) > 0 and min(count[i] - hits[1][i] for i in range(k)) > 0  # neither all right nor all wrong
        for n in (1, 2):
            assert got[n] == pytest.approx([h / c for h, c in zip(hits[n], count)])
        assert position_accuracy(model, drafter, texts, topk=(1,), starts=[0, 0]) == position_accuracy(
            model, drafter, texts, topk=(1,))
        assert got[1] != position_accuracy(model, drafter, texts, topk=(1,))[1]  # the start matters here


def test_drafter_loss_alignment_by_hand():
    # pins the loss: pseudo (j, i) is scored against the token at j+i+1, weights 0.8^(i-1), normalised
    model = tiny_model(seed=6)
    k, T = 3, 10
    drafter = noisy_drafter(model, k, 2, seed=7, scale=0.3)
    seq = rand_tokens(2, T + 1, model.args.vocab_size, seed=8)
    x, y = seq[:, :-1], seq[:, 1:]
    with torch.no_grad():
        loss, acc = drafter_loss(model, drafter, x, y)
        logits = model.logits(pseudo_hidden(model, drafter, x)[1][-1])  # (B, T, k, V)
    num, den = 0.0, 0.0
    for i in range(1, k + 1):
        ces, hits = [], []
        for b in range(2):
            for j in range(T):
                if j + i + 1 <= T:  # the token at j+i+1 exists in seq
                    ces.append(F.cross_entropy(logits[b, j, i - 1], seq[b, j + i + 1]).item())
                    hits.append(float(logits[b, j, i - 1].argmax() == seq[b, j + i + 1]))
        num += 0.8 ** (i - 1) * sum(ces) / len(ces)
        den += 0.8 ** (i - 1)
        assert acc[i - 1] == pytest.approx(sum(hits) / len(hits))
    assert loss.item() == pytest.approx(num / den, rel=1e-6)  # the loss is taken in float32


# ----------------------------------------------------------------------------- a short training run

def test_short_drafter_run_learns():
    # pins that drafter training works: loss falls and position-1 accuracy beats the unigram baseline
    torch.manual_seed(0)
    V = 16
    model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V,
                                  hidden_dim=64, max_seq_len=64)).init_weights(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(150):  # the base learns the chain's bigram
        seq = markov_text(16, 33, V, seed=100 + step)
        loss = F.cross_entropy(model(seq[:, :-1]).flatten(0, 1), seq[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0  # the base model learned something (uniform would be ln 16 = 2.77)
    model.eval().requires_grad_(False)

    held = markov_text(32, 33, V, seed=7)
    hx, hy = held[:, :-1], held[:, 1:]
    unigram = torch.bincount(hy[:, 1:].flatten(), minlength=V).max().item() / hy[:, 1:].numel()
    drafter = new_drafter("hidden-transfer", model, k=2, layer=1)
    with torch.no_grad():
        _, acc_before = drafter_loss(model, drafter, hx, hy)
    opt = torch.optim.AdamW(drafter.parameters(), lr=1e-2)
    losses = []
    for step in range(80):  # self-distillation: targets are the base model's own argmax
        loss, _ = drafter_loss(model, drafter, markov_text(16, 32, V, seed=1000 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        _, acc_after = drafter_loss(model, drafter, hx, hy)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    # the chain makes token j+2 predictable with probability ~0.81; unigram is ~1/16
    assert acc_after[0] > max(unigram, acc_before[0]) + 0.3, (acc_before, acc_after, unigram)


# ----------------------------------------------------------------------------- checkpoints

def test_save_load_round_trip(tmp_path):
    # pins the checkpoint: same weights, k, layer, kind; metadata names the base
    model = tiny_model(dtype=torch.float32)
    d = noisy_drafter(model, k=3, layer=2, scale=0.3)
    f = str(tmp_path / "d.safetensors")
    save_drafter(d, model, f)
    e = load_drafter(f, model)
    assert (type(e), e.k, e.layer, e.dim) == (type(d), 3, 2, model.args.dim)
    assert torch.equal(e.proj.weight, d.proj.weight) and not e.training
    from safetensors import safe_open
    with safe_open(f, "pt") as fh:
        meta = json.loads(fh.metadata()["drafter"])
    assert {k: meta[k] for k in ("kind", "k", "layer", "dim", "vocab_size", "n_layers")} == \
        {"kind": "hidden-transfer", "k": 3, "layer": 2, "dim": 32, "vocab_size": 32, "n_layers": 3}
    assert len(meta["base_fingerprint"]) > 0


def test_load_onto_bfloat16_copy_of_the_base(tmp_path):
    # pins that the fingerprint recognises the same base in bfloat16, and the drafter comes back in bf16
    model = tiny_model(dtype=torch.float32)
    d = noisy_drafter(model, k=2, layer=1, scale=0.3)
    f = str(tmp_path / "d.safetensors")
    save_drafter(d, model, f)
    e = load_drafter(f, model.to(torch.bfloat16))
    assert e.proj.weight.dtype == torch.bfloat16
    assert torch.equal(e.proj.weight, d.proj.weight.to(torch.bfloat16))


def test_refuses_another_base(tmp_path):
    # pins the clear refusal of a drafter trained for different weights of the same shapes
    model = tiny_model(seed=0, dtype=torch.float32)
    f = str(tmp_path / "d.safetensors")
    save_drafter(noisy_drafter(model, 2, 1), model, f)
    with pytest.raises(ValueError, match="different base weights.*fingerprint"):
        load_drafter(f, tiny_model(seed=1, dtype=torch.float32))


@pytest.mark.parametrize("field,over", [("dim", dict(dim=48, head_dim=8)), ("n_layers", dict(n_layers=4)),
                                        ("vocab_size", dict(vocab_size=40))])
def test_refuses_other_shapes(tmp_path, field, over):
    # pins that a shape mismatch names the field
    model = tiny_model(dtype=torch.float32)
    f = str(tmp_path / "d.safetensors")
    save_drafter(noisy_drafter(model, 2, 1), model, f)
    with pytest.raises(ValueError, match=f"{field}="):
        load_drafter(f, tiny_model(dtype=torch.float32, **over))


def test_missing_and_foreign_files(tmp_path):
    # pins the errors for a missing file, a model checkpoint and a file that is not safetensors
    model = tiny_model(dtype=torch.float32)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_drafter(str(tmp_path / "nope.safetensors"), model)
    model.save_pretrained(str(tmp_path / "base"))
    with pytest.raises(ValueError, match="not a drafter"):
        load_drafter(str(tmp_path / "base" / "model.safetensors"), model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a drafter"):
        load_drafter(str(tmp_path / "junk.safetensors"), model)


@pytest.mark.parametrize("tied", [False, True])
def test_fingerprint_is_the_same_blocked_or_not(tmp_path, tied):
    """A drafter saved against the model as loaded on a GPU (nn.Linear) loads onto the CPU's
    blocked model and back: the fingerprint reads the same values in the same order, and they
    are the weights' own (the embedding table first, 8 spread entries of each matrix)."""
    model = tiny_model(dtype=torch.float32, tie_embeddings=tied, dim=32, n_kv_heads=4)  # every out % 16 == 0
    model.save_pretrained(str(tmp_path))
    blocked, plain = (Transformer.from_pretrained(str(tmp_path), blocked=b) for b in (True, False))
    assert blocked.tok_embeddings is None if tied else blocked.tok_embeddings is not None
    fp = base_fingerprint(plain)
    assert fp == base_fingerprint(blocked) == base_fingerprint(model)
    table = model.tok_embeddings.weight.flatten()
    assert fp[:8] == [round(v, 6) for v in table[spread(table.numel())].tolist()]
    n_mats = 1 + 7 * model.args.n_layers + (0 if tied else 1)
    assert len(fp) == 8 * n_mats


def test_fingerprint_of_a_matrix_beyond_2_to_the_24():
    # pins the fingerprint's indices: 8 evenly spread entries from 0 to n-1 exactly, for a matrix of
    # more than 2^24 values (float32 index arithmetic rounded n-1 up to n: an index out of range)
    n_rows, n_cols = 4097, 4096                                     # n = 2^24 + 4096
    n = n_rows * n_cols
    w = (torch.arange(n, dtype=torch.int32) % 1000).to(torch.int16).view(n_rows, n_cols)
    want = [(i * (n - 1) // 7) % 1000 for i in range(8)]
    assert w.flatten()[spread(n)].tolist() == want and want[-1] == (n - 1) % 1000


@pytest.mark.parametrize("blocked", [True, False], ids=["blocked", "nn.Linear"])
def test_draft_vocabulary_of_a_llama3_sized_vocabulary(tmp_path, blocked):
    # restrict_vocab on Llama 3's 128,256-token vocabulary with a tied head (blocked on a CPU in float32,
    # nn.Linear otherwise): the 8,192 most counted ids, their logits equal to the full head's, -inf
    # elsewhere; the counts survive the drafter file
    V = 128256
    model = tiny_model(dtype=torch.float32, vocab_size=V, tie_embeddings=True)
    model.save_pretrained(str(tmp_path / "base"))
    model = Transformer.from_pretrained(str(tmp_path / "base"), blocked=blocked)
    d = noisy_drafter(model, 2, 1)
    d.token_counts = torch.randint(0, 50, (V,), generator=torch.Generator().manual_seed(1))
    save_drafter(d, model, str(tmp_path / "d.safetensors"))
    d = restrict_vocab(load_drafter(str(tmp_path / "d.safetensors"), model), model, 8192)
    ids = d.vocab_head.ids
    top = d.token_counts.argsort(descending=True, stable=True)[:8192]
    assert torch.equal(ids, top.sort().values) and d.token_counts[ids].min() >= d.token_counts.sort().values[-8192]
    h = torch.randn(3, 2, model.args.dim)
    with torch.no_grad():
        got, want = draft_logits(model, d, h), model.logits(h)
    assert got.shape == (3, 2, V)
    assert_close(got[..., ids], want[..., ids], rtol=1e-5, atol=1e-5)
    assert torch.isneginf(got).sum() == 3 * 2 * (V - 8192)


@pytest.mark.parametrize("layer", [0, 3, -1])
def test_new_drafter_bad_layer(layer):
    # pins 1 <= t < L
    with pytest.raises(ValueError, match="transfer layer"):
        new_drafter("hidden-transfer", tiny_model(dtype=torch.float32), 2, layer)


# ----------------------------------------------------------------------------- train.py drafter

@pytest.fixture
def tiny_run(tmp_path):
    """A tiny base checkpoint and a uint16 token corpus, for `train.py drafter --data DIR`."""
    V = 32
    model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V,
                                  hidden_dim=64, max_seq_len=64))
    randomize(model, 2).save_pretrained(str(tmp_path / "base"))
    # train.py reads the checkpoint's tokenizer (BOS, the data's tokenizer check): any will do here
    shutil.copyfile(ROOT / "checkpoints" / "shakespeare" / "tokenizer.model", tmp_path / "base" / "tokenizer.model")
    (tmp_path / "data").mkdir()
    for split, seed in (("train", 1), ("val", 2)):
        text = markov_text(1, 4000, V, seed).flatten().numpy().astype(np.uint16)
        text.tofile(tmp_path / "data" / f"{split}.bin")

    def argv(out, steps, *extra):
        return ["drafter", "--checkpoint", str(tmp_path / "base"), "--data", str(tmp_path / "data"),
                "--k", "2", "--layer", "1", "--seq-len", "16", "--batch-size", "4", "--steps", str(steps),
                "--eval-every", "4", "--eval-batches", "1", "--warmup", "2", "--lr", "1e-2",
                "--no-bf16", "--device", "cpu", "--quiet", "--out", str(tmp_path / out), *extra]
    return tmp_path, argv


def weights(file):
    from safetensors.torch import load_file
    return load_file(file)


def test_train_drafter_end_to_end(tiny_run):
    # pins the CLI: it trains, and writes a drafter that loads onto its base; a second run to the
    # same file is refused unless it resumes the first (hours of training are never overwritten)
    tmp, argv = tiny_run
    train.main(argv("d.safetensors", 8))
    with pytest.raises(SystemExit, match=r"d.safetensors.state.pt holds another run's state: add --resume"):
        train.main(argv("d.safetensors", 8))
    base = Transformer.from_pretrained(str(tmp / "base"))
    d = load_drafter(str(tmp / "d.safetensors"), base)
    assert (d.k, d.layer) == (2, 1)
    assert not torch.equal(d.proj.weight, torch.eye(32).repeat(2, 1))  # it moved from the init
    assert torch.load(str(tmp / "d.safetensors.state.pt"), weights_only=True)["step"] == 8


def test_train_drafter_init_starts_from_a_trained_drafter(tiny_run):
    # pins --init: the run starts from the file's weights (at lr 0 it ends there, bit for bit, where
    # a run without it stays at the identity maps), and a file of another shape is refused by name
    tmp, argv = tiny_run
    train.main(argv("a.safetensors", 6))
    frozen = ["--lr", "0", "--min-lr", "0"]
    hb = train.main(argv("b.safetensors", 4, "--init", str(tmp / "a.safetensors"), *frozen))
    hc = train.main(argv("c.safetensors", 4, *frozen))
    a, b, c = (weights(str(tmp / f"{n}.safetensors")) for n in "abc")
    assert torch.equal(b["proj.weight"], a["proj.weight"].to(b["proj.weight"].dtype))
    assert torch.equal(c["proj.weight"].float(), torch.eye(32).repeat(2, 1))
    # a continued run scores its starting drafter first: here, frozen, the same as after its steps
    assert [h["step"] for h in hb] == [0, 4] and [h["step"] for h in hc] == [4]
    assert hb[0]["val_top1"] == hb[1]["val_top1"] and hb[0]["val_top1"] != hc[0]["val_top1"]
    he = train.main(argv("e.safetensors", 0, "--init", str(tmp / "a.safetensors")))  # --steps 0: a score only
    assert he == hb[:1]
    assert not (tmp / "e.safetensors").exists()
    with pytest.raises(SystemExit, match=r"--init .* \(k, layer, lm_heads\) = \(2, 1, None\), this run \(3, 1, None\)"):
        train.main(argv("d.safetensors", 2, "--init", str(tmp / "a.safetensors"), "--k", "3"))


def test_drafter_files_count_their_training_tokens(tiny_run):
    # pins the counts a draft vocabulary is chosen from: a run records its train.bin's token counts, a
    # run from --init adds them to the file's, and `train.py count-tokens` sets a file's counts to those
    # of the folders given, writing its weights back unchanged (in their own storage type)
    tmp, argv = tiny_run
    V = 32
    text = torch.from_numpy(np.fromfile(tmp / "data" / "train.bin", dtype=np.uint16).astype(np.int64))
    once = torch.bincount(text, minlength=V)
    train.main(argv("a.safetensors", 2))
    base = Transformer.from_pretrained(str(tmp / "base"))
    assert torch.equal(load_drafter(str(tmp / "a.safetensors"), base).token_counts, once)
    train.main(argv("b.safetensors", 2, "--init", str(tmp / "a.safetensors")))
    assert torch.equal(load_drafter(str(tmp / "b.safetensors"), base).token_counts, 2 * once)
    (tmp / "more").mkdir()
    np.arange(V, dtype=np.uint16).repeat(3).tofile(tmp / "more" / "train.bin")  # every token 3 times
    before = weights(str(tmp / "b.safetensors"))
    train.main(["count-tokens", "--checkpoint", str(tmp / "base"), "--drafter", str(tmp / "b.safetensors"),
                "--data", str(tmp / "data"), str(tmp / "more")])
    after = weights(str(tmp / "b.safetensors"))
    assert torch.equal(after.pop("token_counts"), once + 3) and before.pop("token_counts") is not None
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)
    assert after["proj.weight"].dtype == torch.bfloat16
    with pytest.raises(SystemExit, match="not found"):
        train.main(["count-tokens", "--checkpoint", str(tmp / "base"), "--drafter", str(tmp / "b.safetensors"),
                    "--data", str(tmp / "nowhere")])


def test_train_drafter_on_answers_and_several_folders(tiny_run, monkeypatch, capsys):
    # pins the command line of --draft-on answers and of several --data folders: the mask reaches the
    # training and held-out losses (all scored: the run of --draft-on all, bit for bit; none: refused by
    # name), a model without a chat template is refused with the fix, and texts of two folders are joined
    tmp, argv = tiny_run
    plain = train.main(argv("a.safetensors", 4))
    monkeypatch.setattr(train, "answer_tokens", lambda ids, tok: np.ones(len(ids), dtype=bool))
    assert train.main(argv("b.safetensors", 4, "--draft-on", "answers")) == plain
    monkeypatch.setattr(train, "answer_tokens", lambda ids, tok: np.arange(len(ids)) % 2 == 0)
    half = train.main(argv("h.safetensors", 4, "--draft-on", "answers"))
    assert all(h["loss"] != p["loss"] and h["val_top1"] != p["val_top1"] for h, p in zip(half, plain))
    monkeypatch.setattr(train, "answer_tokens", lambda ids, tok: np.zeros(len(ids), dtype=bool))
    with pytest.raises(SystemExit, match=r"--draft-on answers: .* holds no answer of this model's chat template"):
        train.main(argv("c.safetensors", 4, "--draft-on", "answers"))
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=r"this model has none: use --draft-on all"):  # the Shakespeare tokenizer
        train.main(argv("c.safetensors", 4, "--draft-on", "answers"))
    with pytest.raises(SystemExit):
        train.main(argv("c.safetensors", 4, "--data", "self", "--draft-on", "answers"))
    assert "--data self samples text from the model" in capsys.readouterr().err

    (tmp / "more").mkdir()
    for split in ("train", "val"):
        np.arange(32, dtype=np.uint16).repeat(3).tofile(tmp / "more" / f"{split}.bin")
    train.main(argv("d.safetensors", 2, "--data", str(tmp / "data"), str(tmp / "more")))
    text = np.fromfile(tmp / "data" / "train.bin", dtype=np.uint16).astype(np.int64)
    base = Transformer.from_pretrained(str(tmp / "base"))
    assert torch.equal(load_drafter(str(tmp / "d.safetensors"), base).token_counts,
                       torch.bincount(torch.from_numpy(text), minlength=32) + 3)


def test_train_drafter_resume_is_exact(tiny_run, monkeypatch):
    # pins --resume: interrupted after step 4 and resumed == one straight 8-step run, bit for bit
    tmp, argv = tiny_run
    train.main(argv("a.safetensors", 8))

    real_lr_at, seen = train.lr_at, []

    def interrupt_at_5(step, a):
        if step == 4:
            raise KeyboardInterrupt  # the fifth step never runs; the state of step 4 is on disk
        return real_lr_at(step, a)
    monkeypatch.setattr(train, "lr_at", interrupt_at_5)
    with pytest.raises(KeyboardInterrupt):
        train.main(argv("b.safetensors", 8))
    assert torch.load(str(tmp / "b.safetensors.state.pt"), weights_only=True)["step"] == 4

    monkeypatch.setattr(train, "lr_at", lambda step, a: seen.append(step) or real_lr_at(step, a))
    train.main(argv("b.safetensors", 8, "--resume"))
    assert seen == [4, 5, 6, 7]  # it really continued from step 4
    a, b = weights(str(tmp / "a.safetensors")), weights(str(tmp / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(str(tmp / "a.safetensors.state.pt"), weights_only=True)
    sb = torch.load(str(tmp / "b.safetensors.state.pt"), weights_only=True)
    assert [h["val_top1"] for h in sa["history"]] == [h["val_top1"] for h in sb["history"]]


def test_train_drafter_with_spawn_learns_and_resumes(tiny_run):
    # pins --spawn end to end: a few drafting positions a step still teach the drafter (held-out
    # top-1 at +1 rises), and the positions are a function of (seed, step), so --resume is exact
    tmp, argv = tiny_run
    history = train.main(argv("s.safetensors", 24, "--spawn", "4"))
    assert history[-1]["val_top1"][0] > history[0]["val_top1"][0] + 0.05, history
    again = train.spawn_positions(SimpleNamespace(spawn=4, seq_len=16, seed=1337), 7)
    assert torch.equal(again, train.spawn_positions(SimpleNamespace(spawn=4, seq_len=16, seed=1337), 7))
    assert len(again) == 4 and again.max() < 15 and (again.diff() > 0).all()
    with pytest.raises(SystemExit):
        train.main(argv("t.safetensors", 4, "--spawn", "0"))
