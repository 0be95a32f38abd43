"""Drafters: hidden-transfer projections and Medusa heads, their pass, training loss and files.

Both kinds draft the same tokens. At position j the model itself decides the token
at j+1 (the next root); a drafter guesses the k tokens after it, at j+2..j+k+1.

Hidden transfer (Wu et al. 2024): at layer t, k linear maps turn the hidden state
h_j^t into pseudo hidden states standing in for positions j+1..j+k. They pass blocks
t+1..L with the real tokens, soak up context through attention, and the ordinary LM
head reads off pseudo i a guess for the token after its position, j+i+1.

Medusa (Cai et al. 2024), the baseline: head i reads its guess for the token at j+i+1
straight off the final hidden state of position j.

The method as this project implements it, and what is our reconstruction: docs/method.md.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import BlockedLinear, atomic_write, block_linears_
from tree import pseudo_layout


class HiddenTransfer(nn.Module):
    """k maps d -> d at transfer layer t (1 <= t < L): h_j^t -> pseudo_1..pseudo_k."""

    kind = "hidden-transfer"

    def __init__(self, dim, k, layer):
        super().__init__()
        self.dim, self.k, self.layer = dim, k, layer
        # One (d, k*d) matrix = the k maps W_1..W_k side by side, so drafting is one matmul.
        # Identity init: pseudo_i starts as a copy of h_j^t, a sensible guess (it already
        # predicts the next token) from which training only has to learn a correction.
        self.proj = nn.Linear(dim, k * dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim).repeat(k, 1))
        self.token_counts, self.vocab_head = None, None  # the training text's token counts; restrict_vocab

    def forward(self, h):
        return self.proj(h).unflatten(-1, (self.k, self.dim))  # (..., d) -> (..., k, d)


class ResBlock(nn.Module):
    """x + SiLU(W x + b). W and b start at zero, so the block starts as the identity."""

    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)  # Medusa leaves b random; zero keeps the start exactly the identity

    def forward(self, x):
        return x + F.silu(self.linear(x))


class Medusa(nn.Module):
    """k heads on the final (normed) hidden state of position j; head i predicts the token at j+i+1.

    lm_heads=True is Medusa-1: each head a ResBlock and its own LM head (k(d^2 + d + dV)
    parameters: 115M for SmolLM2's 49k vocabulary, 15x hidden transfer's on the shipped
    model). lm_heads=False reads every head through the base model's own frozen LM head:
    k(d^2 + d) parameters, hidden transfer's budget (k d^2), the fair comparison of the two ideas.
    """

    kind = "medusa"

    def __init__(self, dim, vocab_size, k, lm_heads=True):
        super().__init__()
        self.dim, self.k, self.lm_heads = dim, k, lm_heads
        # Each head: a ResBlock, then its own LM head (new_drafter copies the base model's
        # into each) or the base model's, so an untrained head i guesses that token j+i+1
        # is the base model's next token — the same start as hidden transfer's identity maps.
        self.heads = nn.ModuleList(nn.Sequential(ResBlock(dim), nn.Linear(dim, vocab_size, bias=False))
                                   if lm_heads else ResBlock(dim) for _ in range(k))
        self.token_counts, self.vocab_head = None, None  # as HiddenTransfer's

    def forward(self, h, lm_head=None):
        """(..., d) normed hidden states -> (..., k, V) logits; lm_head: the base model's
        output layer, which heads without their own read through."""
        return torch.stack([head(h) if self.lm_heads else lm_head(head(h)) for head in self.heads], -2)


def draft_logits(model, drafter, x):
    """Draft logits (..., k, V) from what the full model's pass leaves at a position:
    hidden transfer: its k pseudo states after block L (..., k, d);
    Medusa: its own hidden state after block L (..., d), which the heads read after the final norm.
    Both read through the model's LM head, or its draft-vocabulary rows (restrict_vocab)."""
    head = drafter.vocab_head or model.output
    if drafter.kind == "medusa":
        return drafter(model.norm(x), head)
    return head(model.norm(x))


class VocabHead:
    """The LM head cut to a draft vocabulary, token ids (n,): one product over its n rows instead of
    all V, its logits laid out over the whole vocabulary with -inf elsewhere, so that whatever reads
    drafts (top-k, argmax, softmax) reads them as before. A plain object, not a module: never trained
    or saved, rebuilt from the head whenever a drafter is restricted."""

    def __init__(self, lm_head, ids, vocab_size):
        rows = lm_head.rows(ids) if isinstance(lm_head, BlockedLinear) else lm_head.weight.detach()[ids]  # (n, d)
        linear = nn.Linear(rows.shape[1], len(ids), bias=False, device=rows.device, dtype=rows.dtype)
        linear.weight = nn.Parameter(rows, requires_grad=False)
        self.head = block_linears_(nn.Sequential(linear))[0]  # blocked like the model's own head, where it is
        self.ids, self.vocab_size = ids, vocab_size

    def __call__(self, h):
        out = h.new_full((*h.shape[:-1], self.vocab_size), float("-inf"))  # (..., V)
        out[..., self.ids] = self.head(h)
        return out


def restrict_vocab(drafter, model, n):
    """Draft from the n tokens the drafter's training text used most (drafter.token_counts), or from
    the whole vocabulary (n = 0 or n >= V); returns drafter. Why: a draft costs an LM-head product
    over every row, and on a CPU the rows are the weights a step reads (SmolLM2: 49,152 x 576, a fifth
    of the model), while an answer's tokens come from a few thousand of them (8,192 hold 96.6% of its
    held-out answers' tokens). Drafts only propose: the output never changes, only which guesses a
    step can make (docs/method.md)."""
    V = model.args.vocab_size
    if not n or n >= V:
        drafter.vocab_head = None
        return drafter
    if drafter.kind == "medusa" and drafter.lm_heads:
        raise ValueError("Medusa heads with LM heads of their own draft from the whole vocabulary: a draft "
                         "vocabulary applies to drafters that read through the model's LM head (--draft-vocab 0)")
    if drafter.token_counts is None:
        raise ValueError("this drafter has no token counts to choose a draft vocabulary from (an untrained one, or "
                         "a file from before drafter runs recorded them): add them with `python train.py "
                         "count-tokens --drafter FILE --data DIR`, or draft from every token (--draft-vocab 0)")
    ids = drafter.token_counts.argsort(descending=True, stable=True)[:n].sort().values  # ties: lower ids first
    drafter.vocab_head = VocabHead(model.output, ids.to(model.device), V)
    return drafter


def count_tokens(tokens, vocab_size, counts=None):
    """Token counts (V,) int64 of a text (any integer array), added to counts if given."""
    new = torch.bincount(torch.as_tensor(tokens).flatten().long(), minlength=vocab_size)
    return new if counts is None else counts + new


def ht_forward(model, drafter, tokens, pos, mask, cache=None, spawn=None):
    """Hidden transfer's pass: the one construction, for training on a text and for decoding a tree.

    tokens (B, N): the real tokens (a text, or a tree's nodes on top of the KV cache);
    spawn (n,): the tokens that spawn pseudo tokens (None: all, n = N); pos (N + n*k,) and
    mask (N + n*k, S) over S = [cached ; real ; pseudo] keys, laid out by tree.pseudo_layout.
    Blocks 1..t run over the real tokens, each spawning token makes k pseudo tokens from its
    own h^t, blocks t+1..L run over [real ; pseudo]. Returns the real tokens' final hidden
    states (B, N, d) and the pseudo states after each block t+1..L, a list of (B, n, k, d).
    Cache entries are left pending for the caller to commit.
    """
    N, t, k = tokens.shape[1], drafter.layer, drafter.k
    n_pseudo = mask.shape[0] - N
    S = mask.shape[1] - n_pseudo  # blocks 1..t have no pseudo tokens yet (and real ones never see them)
    with torch.no_grad():  # the base model is frozen: blocks 1..t need no gradient
        h = model.run_blocks(model.embed(tokens), pos[:N], mask[:N, :S], cache, 0, t)      # (B, N, d)
    pseudo = drafter(h if spawn is None else h[:, spawn]).flatten(1, 2)                     # (B, n*k, d)
    hs = model.run_blocks(torch.cat([h, pseudo], 1), pos, mask, cache, t, return_all=True)  # L-t x (B, N + n*k, d)
    return hs[-1][:, :N], [x[:, N:].unflatten(1, (-1, k)) for x in hs]


# ----------------------------------------------------------------------------- training

def text_layout(T, k, spawn=None, device=None):
    """A text of T tokens as a chain-shaped tree (each token's ancestors are the tokens before
    it): its tree.pseudo_layout, the training layout. -> mask (M, M), positions (M,)."""
    return pseudo_layout(torch.ones(T, T, dtype=torch.bool, device=device).tril(),
                         torch.arange(T, device=device), k, spawn)


def training_mask(T, k, device=None):
    """Attention mask over [T real ; T*k pseudo], pseudo (j, i) at index T + j*k + i-1.

    Real tokens are causal and never see pseudo tokens; pseudo (j, i) sees real
    tokens <= j and pseudo (j, 1..i) of its own group. A text is a chain-shaped tree
    (each token's ancestors are the tokens before it): this is its tree.pseudo_layout.
    """
    return text_layout(T, k, device=device)[0]


def training_positions(T, k, device=None):
    """(T + T*k,) positions: real j -> j, pseudo (j, i) -> j + i."""
    return text_layout(T, k, device=device)[1]


def pseudo_hidden(model, drafter, tokens, spawn=None):
    """One training pass: (B, T) tokens -> the real tokens' final hidden states (B, T, d)
    and the pseudo states after each block t+1..L, a list of (B, n, k, d) for the n
    positions in spawn (None: all T)."""
    T, k, device = tokens.shape[1], drafter.k, tokens.device
    # The real rows never see pseudo tokens, so they come out exactly as in a plain forward:
    # the base model's own predictions (the self-distillation targets) cost nothing extra.
    mask, pos = text_layout(T, k, spawn, device)
    real, pseudo = ht_forward(model, drafter, tokens, pos, mask, spawn=spawn)
    return real.detach(), pseudo


def position_weights(k, decay=0.8):
    # lambda_i = decay^(i-1) for i = 1..k. Medusa writes 0.8^i: the same weights times 0.8,
    # which the loss's division by their sum cancels
    return torch.tensor([decay ** i for i in range(k)])


def drafts_for_text(model, drafter, tokens, spawn=None):
    """Drafts at every position of a text (or at the positions in spawn), as in training:
    (B, T) tokens -> the real tokens' final hidden states (B, T, d) and draft logits
    (B, n, k, V); draft i of position j predicts the token at j+i+1."""
    if drafter.kind == "medusa":
        with torch.no_grad():  # the frozen base model runs entirely without gradients
            real = model.run_blocks(model.embed(tokens), torch.arange(tokens.shape[1], device=tokens.device))
        return real, draft_logits(model, drafter, real if spawn is None else real[:, spawn])
    real, pseudo = pseudo_hidden(model, drafter, tokens, spawn)
    return real, draft_logits(model, drafter, pseudo[-1])


def drafter_loss(model, drafter, tokens, targets=None, decay=0.8, spawn=None, scored=None):
    """Weighted cross-entropy over future positions, and each position's top-1 accuracy.

    tokens (B, T). targets (B, T): the token that follows each position in the text;
    None = self-distillation, the base model's own argmax at each position.
    Draft i of position j (pseudo token i, or Medusa head i) predicts the token at
    j+i+1, i.e. targets[:, j+i]. spawn (n,): the positions j that draft (None: all);
    a few per text make a step much cheaper, and both drafter kinds take the same ones.
    scored (B, T) bool: which targets count (None: all); e.g. only the tokens of the
    model's answers in a chat, the ones decoding drafts, not the user's turns.
    """
    T, k, device = tokens.shape[1], drafter.k, tokens.device
    j = torch.arange(T, device=device) if spawn is None else spawn                  # (n,)
    real, logits = drafts_for_text(model, drafter, tokens, spawn)                  # (B, T, d), (B, n, k, V)
    if targets is None:  # the base model's argmax, only where some draft is scored
        need = (j[:, None] + torch.arange(1, k + 1, device=device)).flatten().unique()
        need = need[need < T]
        targets = torch.zeros(tokens.shape, dtype=torch.long, device=device)
        targets[:, need] = model.logits(real[:, need]).argmax(-1)                  # (B, T) at need
    losses, acc = [], []
    for i in range(1, k + 1):
        rows = j + i < T                                                           # drafts inside the text
        pred, tgt = logits[:, rows, i - 1], targets[:, j[rows] + i]                # (B, m, V), (B, m)
        keep = torch.ones(tgt.shape, device=device) if scored is None else scored[:, j[rows] + i].float()
        ce = F.cross_entropy(pred.flatten(0, 1).float(), tgt.flatten(), reduction="none")
        n = keep.sum().clamp(min=1)  # a batch may hold no scored target at this offset: a loss of 0 then
        losses.append((ce * keep.flatten()).sum() / n)
        acc.append((((pred.argmax(-1) == tgt).float() * keep).sum() / n).item())
    w = position_weights(k, decay).to(logits.device)
    return (torch.stack(losses) * w).sum() / w.sum(), acc


# ----------------------------------------------------------------------------- saving and loading

def spread(n, device=None):
    """8 indices evenly spread over 0..n-1. Integer arithmetic: a float32 linspace rounds n-1 up
    past the last element once a matrix holds more than 2^24 values (128k vocabulary x 2048 dims)."""
    return torch.arange(8, device=device) * (n - 1) // 7


def base_fingerprint(model):
    """A few weights of the base model, to recognise it (in any dtype) when loading a drafter:
    8 values from every weight matrix (any retrained or fine-tuned block changes some of them),
    in the order of model.parameters() on the model as loaded without blocks: the embedding
    table (tied and blocked: the LM head's), the blocks' matrices, then an untied LM head."""
    mats = [model.output if model.tok_embeddings is None else model.tok_embeddings]
    mats += [m for layer in model.layers for m in layer.modules() if isinstance(m, (nn.Linear, BlockedLinear))]
    mats += [] if model.args.tie_embeddings else [model.output]
    vals = []
    for m in mats:
        blocked = isinstance(m, BlockedLinear)  # its `weight` would be a copy of the whole matrix
        idx = spread((m.blocks if blocked else m.weight).numel(), model.device)
        vals += (m.entries(idx) if blocked else m.weight.detach().flatten()[idx]).float().cpu().tolist()
    return [round(v, 6) for v in vals]


def save_drafter(drafter, model, path, dtype=None):
    """safetensors with metadata naming the base it was trained for; atomic. dtype: storage
    type (bfloat16 halves the file; a drafter's precision never changes the output)."""
    from safetensors.torch import save
    a = model.args
    meta = {"kind": drafter.kind, "k": drafter.k, "layer": getattr(drafter, "layer", a.n_layers),
            "dim": a.dim, "vocab_size": a.vocab_size, "n_layers": a.n_layers,
            "base_fingerprint": base_fingerprint(model)}
    if drafter.kind == "medusa":
        meta["lm_heads"] = drafter.lm_heads
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in drafter.state_dict().items()}
    if drafter.token_counts is not None:  # what restrict_vocab chooses a draft vocabulary from
        state["token_counts"] = drafter.token_counts.cpu()
    atomic_write(path, lambda f: f.write(save(state, metadata={"drafter": json.dumps(meta)})))


def load_drafter(path, model, kind=None):
    """Load a drafter for `model`; refuse one trained for another base model, or not of `kind`."""
    from safetensors import safe_open
    if not os.path.exists(path):
        how = f"python train.py drafter --kind {kind}" if kind else "python train.py drafter"
        raise FileNotFoundError(f"drafter {path!r} not found: train one with `{how}`, "
                                f"or use --drafter init for an untrained one")
    try:
        with safe_open(path, "pt") as f:
            meta = json.loads((f.metadata() or {})["drafter"])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"{path} is not a drafter checkpoint ({type(e).__name__}: {e})") from None
    if kind is not None and meta["kind"] != kind:
        raise ValueError(f"{path} holds a {meta['kind']} drafter, not a {kind} one: "
                         f"use --method {meta['kind']}, or pass a {kind} drafter file with --drafter")
    a = model.args
    for key in ("dim", "vocab_size", "n_layers"):
        if meta[key] != getattr(a, key):
            raise ValueError(f"{path} was trained for a base model with {key}={meta[key]}, "
                             f"this one has {key}={getattr(a, key)}: train a drafter for this model")
    saved, ours = torch.tensor(meta["base_fingerprint"]), torch.tensor(base_fingerprint(model))
    if saved.shape != ours.shape or not torch.allclose(saved, ours, rtol=2e-2, atol=1e-3):  # loose enough for a bfloat16 copy of the same base
        raise ValueError(f"{path} was trained for different base weights (fingerprint mismatch): "
                         f"train a drafter for this checkpoint with `python train.py drafter`")
    layer = meta["layer"] if meta["kind"] == "hidden-transfer" else None  # Medusa's heads sit on top
    lm_heads = meta.get("lm_heads", True)  # files from before the shared-head variant have their own
    # in the model's dtype first, so that loading a float64 file onto a float64 model is exact
    drafter = new_drafter(meta["kind"], model, meta["k"], layer, lm_heads).to(device=model.device, dtype=model.dtype)
    counts = state.pop("token_counts", None)  # files from before draft vocabularies have none
    drafter.load_state_dict(state)
    drafter.token_counts = counts
    return block_linears_(drafter.eval())  # as the base model's weights: faster on a CPU


def new_drafter(kind, model, k, layer=None, lm_heads=True):
    """An untrained drafter of `kind` for `model`: identity maps at layer t, or Medusa heads
    whose LM heads are copies of the model's (lm_heads=False: no LM heads of their own)."""
    a = model.args
    if kind == "medusa":
        if layer is not None:
            raise ValueError("a transfer layer applies to hidden-transfer drafters only, not medusa")
        drafter = Medusa(a.dim, a.vocab_size, k, lm_heads)
        if lm_heads:
            with torch.no_grad():
                for res_block, lm_head in drafter.heads:
                    lm_head.weight.copy_(model.output.weight)
        return drafter
    if kind == "hidden-transfer":
        layer = a.n_layers // 2 if layer is None else layer
        if not 1 <= layer < a.n_layers:
            raise ValueError(f"transfer layer {layer} must be in 1..{a.n_layers - 1} for a {a.n_layers}-layer model")
        return HiddenTransfer(a.dim, k, layer)
    raise ValueError(f"unknown drafter kind {kind!r}")
