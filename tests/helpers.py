"""Shared by the tests: random models a bug would move by O(1), noisy drafters, a learnable toy
language, and the exact law of sampled tokens with a chi-square test against it."""
import math
from dataclasses import replace

import torch
from torch.testing import assert_close

import decode
from model import ModelArgs, Transformer
from transfer import drafts_for_text, new_drafter

TINY = dict(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=32, hidden_dim=64, max_seq_len=128)


def randomize(model, seed=0, residual=1.0):
    """O(1) random weights. Default inits give near-uniform logits, where a wrong mask or
    position hides under 1e-4 and greedy decoding meets near-ties; norm gains are not all
    ones, so a swapped or skipped norm shows. The blocks' output projections are scaled
    by `residual`: below 1, a model with a block skipped is a fair but imperfect guess of
    the full one (self-spec's draft model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                scale = residual if name.endswith(("wo.weight", "w2.weight")) else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model.eval()


def tiny_model(seed=0, dtype=torch.float64, residual=1.0, **over):
    """A randomized Llama (TINY, with `over` changed), float64 unless asked otherwise."""
    return randomize(Transformer(ModelArgs(**(TINY | over))), seed, residual).to(dtype)


def noisy_drafter(model, k, layer, seed=0, scale=0.5):
    """An untrained hidden-transfer drafter: identity maps plus noise, so drafts vary, differ
    from map to map, and are sometimes right."""
    d = new_drafter("hidden-transfer", model, k, layer).to(model.output.weight.dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        noise = torch.randn(d.proj.weight.shape, generator=g, dtype=torch.float64) / model.args.dim ** 0.5
        d.proj.weight.add_(scale * noise.to(d.proj.weight.dtype))
    return d.eval()


def noisy_medusa(model, k, seed=0, scale=0.5, lm_heads=True):
    """An untrained Medusa drafter with random ResBlocks, so that its heads disagree (lm_heads=False:
    they read through the model's LM head)."""
    d = new_drafter("medusa", model, k, lm_heads=lm_heads).to(model.output.weight.dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in d.heads:
            w = (head[0] if lm_heads else head).linear.weight
            w.copy_(scale * torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype) / w.shape[1] ** 0.5)
    return d.eval()


def prompt_of(n, vocab, seed):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def accept_hist(out, stats):
    """stats["accept_hist"] as {tokens emitted: steps}, checked against the output."""
    hist = {int(n): c for n, c in stats["accept_hist"].items()}
    assert sum(n * c for n, c in hist.items()) == len(out) - 1  # the first token comes from the prefill
    assert sum(hist.values()) == stats["steps"]
    return hist


def markov_text(n_seqs, T, vocab, seed):
    """A peaked Markov chain: next = succ[cur] with probability 0.9, else a uniform token."""
    succ = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n_seqs, T, dtype=torch.long)
    x[:, 0] = torch.randint(0, vocab, (n_seqs,), generator=g)
    for t in range(1, T):
        keep = torch.rand(n_seqs, generator=g) < 0.9
        x[:, t] = torch.where(keep, succ[x[:, t - 1]], torch.randint(0, vocab, (n_seqs,), generator=g))
    return x


# ----------------------------------------------------------------------------- the law of sampled tokens

def warp(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The target rule written out independently of decode.Sampler: temperature, then top-k,
    then the smallest set of most likely tokens whose mass reaches top_p."""
    logits = logits.double() / temperature
    if top_k:
        logits = logits.masked_fill(logits < logits.sort(descending=True).values[top_k - 1], -math.inf)
    p = logits.softmax(-1)
    if top_p < 1:
        order = p.argsort(descending=True)
        keep = torch.zeros_like(p, dtype=torch.bool)
        mass = 0.0
        for t in order.tolist():
            keep[t] = True
            mass += float(p[t])
            if mass >= top_p:
                break
        p = torch.where(keep, p, 0.0)
        p = p / p.sum()
    return p


def exact_joint(model, prompt, rule=(1.0, 0, 1.0)):
    """P(first three tokens) by enumeration, p(x1) p(x2 | x1) p(x3 | x1, x2): (V, V, V)."""
    V = model.args.vocab_size
    seqs = torch.tensor([prompt + [a, b] for a in range(V) for b in range(V)])  # (V*V, P+2)
    with torch.no_grad():
        logits = model(seqs)                                                    # (V*V, P+2, V)
    joint = torch.zeros(V, V, V, dtype=torch.float64)
    p1 = warp(logits[0, -3], *rule)
    for a in range(V):
        p2 = warp(logits[a * V, -2], *rule)
        for b in range(V):
            joint[a, b] = p1[a] * p2[b] * warp(logits[a * V + b, -1], *rule)
    return joint


def chi_square_p(counts, joint, n):
    """p-value of Pearson's chi-square over the possible outcomes; the least likely ones are
    pooled until every cell expects at least 5 counts (the chi-square approximation's rule)."""
    expected, observed = joint.flatten() * n, counts.flatten()
    order = expected.argsort()
    order = order[expected[order] > 0]  # impossible outcomes are checked separately: they never occur
    cells, e_acc, o_acc = [], 0.0, 0.0
    for i in order.tolist():
        e_acc, o_acc = e_acc + float(expected[i]), o_acc + float(observed[i])
        if e_acc >= 5:
            cells.append((o_acc, e_acc))
            e_acc = o_acc = 0.0
    if e_acc:  # the most likely outcomes come last, so this remainder joins a big cell
        o, e = cells.pop()
        cells.append((o + o_acc, e + e_acc))
    stat = sum((o - e) ** 2 / e for o, e in cells)
    df = len(cells) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


# Under the null hypothesis (the rule is exact) the p-value is uniform, so asserting p > 1e-6
# fails a correct implementation with probability 1e-6; the seeds are fixed, so CI is deterministic.
P_FAIL = 1e-6


# ----------------------------------------------------------------------------- the drafts decoding computes

def decoding_drafts(monkeypatch, model, drafter, prompt, max_new_tokens, tree, spawn=None):
    """Greedy tree decoding with hidden transfer or Medusa that records every step's draft
    logits and the position j of the accepted node -> (output, [(j, (k - s, V) logits)]), where
    s > 0 when they were read at an ancestor s levels up (spawn: it had the pseudo tokens)."""
    out, seen, real = [], [], decode.draft_logits

    def recording(*args):
        rows = real(*args)
        # when a step drafts, out ends with its root; the node the drafts come from precedes it
        seen.append((len(prompt) + len(out) - 2, rows))
        return rows
    with monkeypatch.context() as m:
        m.setattr(decode, "draft_logits", recording)
        got, stats = decode.generate_tree(model, drafter, prompt, max_new_tokens, decode.Sampler(), tree,
                                          on_tokens=out.extend, spawn=spawn)
    assert got == out and len(seen) == stats["steps"]
    return got, seen


def assert_drafts_as_in_training(model, drafter, prompt, out, seen, rtol=1e-9, atol=1e-9):
    """Each recorded draft equals what drafts_for_text (the training pass) computes at its position:
    k - s rows drafted s levels above the accepted node j are D_{s+1}..D_k of position j - s."""
    with torch.no_grad():
        _, want = drafts_for_text(model, drafter, torch.tensor([prompt + out]))  # (1, T, k, V)
    for j, rows in seen:
        s = drafter.k - rows.shape[0]
        assert_close(rows, want[0, j - s, s:], rtol=rtol, atol=atol, msg=lambda m: f"position {j}, s={s}: {m}")


def skip_model(model, skip):
    """The self-spec draft model built independently of decode.py: a Transformer holding only the
    kept blocks (renumbered), with the base model's embedding, final norm and LM head."""
    kept = [i for i in range(model.args.n_layers) if i not in skip]
    sub = Transformer(replace(model.args, n_layers=len(kept))).to(model.output.weight.dtype)
    state = {}
    for name, w in model.state_dict().items():
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            if int(i) not in kept:
                continue
            name = f"layers.{kept.index(int(i))}.{rest}"
        state[name] = w
    sub.load_state_dict(state)
    return sub.eval()


def self_spec_drafts_seen(monkeypatch, model, spec, prompt, max_new_tokens, tree="chain"):
    """Greedy self-spec decoding that records every step's drafts -> (output, [(sequence so far, (k, V))])."""
    seen, real = [], decode.self_spec_drafts

    def recording(*args):
        rows = real(*args)
        seen.append((list(args[-1]), rows))
        return rows
    with monkeypatch.context() as m:
        m.setattr(decode, "self_spec_drafts", recording)
        out, stats = decode.generate_tree(model, spec, prompt, max_new_tokens, decode.Sampler(), tree)
    assert len(seen) == stats["steps"]
    return out, seen


def assert_skip_model_chain(sub, seen, k, **tol):
    """Each step's draft logits are the independent skip model's, along its own greedy chain."""
    with torch.no_grad():
        for seq, rows in seen:
            x = list(seq)
            for i in range(k):
                logits = sub(torch.tensor([x]))[0, -1]                     # (V,)
                assert_close(rows[i], logits, **tol, msg=lambda m: f"draft {i + 1} after {len(seq)} tokens: {m}")
                x.append(int(logits.argmax()))
