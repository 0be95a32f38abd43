"""Decoding loops and the command line: plain autoregressive, and tree decoding with
hidden transfer or the two baselines, Medusa heads and self-speculative decoding.

    python decode.py                                   # shipped model, hidden transfer, greedy
    python decode.py --method ar --prompt "ROMEO:"     # plain decoding
    python decode.py --method medusa                   # Medusa heads (CHECKPOINT/medusa.safetensors)
    python decode.py --method self-spec --skip 2       # the model minus block 2 drafts
    python decode.py --checkpoint path/to/llama --drafter init --json

Every loop emits exactly the tokens the model alone would emit: greedy output is
identical token for token, sampled output has exactly the model's distribution.
"""
import argparse
import functools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import torch

from model import DTYPES, Tokenizer, Transformer, block_linears_, pick_device
from transfer import draft_logits, ht_forward, load_drafter, new_drafter, restrict_vocab
from tree import build_tree, candidates, clip, dynamic_tree, greedy_accept, parse_tree, pseudo_layout

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CHECKPOINT = os.path.join(HERE, "checkpoints", "shakespeare")
DEFAULT_PROMPT = "ROMEO:\nBut soft, what light"
DRAFTER_FILES = {"hidden-transfer": "hidden_transfer.safetensors", "medusa": "medusa.safetensors"}


# ----------------------------------------------------------------------------- sampling

class Sampler:
    """The model's own next-token rule: greedy (temperature 0) or warped sampling."""

    def __init__(self, temperature=0.0, top_k=0, top_p=1.0, seed=0):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.gen = torch.Generator().manual_seed(seed)  # CPU generator: same draws on any device

    @property
    def greedy(self):
        return self.temperature == 0

    def probs(self, logits):
        """(..., V) logits -> the warped distribution we sample from (float32, CPU)."""
        logits = logits.float().cpu() / self.temperature
        if self.top_k:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(-1)
        if self.top_p < 1.0:
            # keep the smallest set of top tokens whose mass reaches top_p
            sorted_p, idx = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= self.top_p
            probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop, 0.0))
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    def sample(self, probs):
        return int(torch.multinomial(probs, 1, generator=self.gen))

    def uniform(self):
        return float(torch.rand((), generator=self.gen))

    def __call__(self, logits):
        """(V,) logits -> next token."""
        return int(logits.argmax()) if self.greedy else self.sample(self.probs(logits))


# ----------------------------------------------------------------------------- plain decoding

@torch.inference_mode()
def generate_ar(model, prompt_ids, max_new_tokens, sampler, eos_ids=(), on_tokens=None):
    """Prefill, then one token per forward pass on the KV cache. Returns (token ids, stats)."""
    device = model.device
    cache = model.new_cache(max_len=len(prompt_ids) + max_new_tokens)
    x = torch.tensor([prompt_ids], device=device)  # (1, P)
    out, steps = [], 0
    while True:
        h = model.run_blocks(model.embed(x), model.positions(cache.length, x.shape[1], device), cache=cache)
        cache.commit()
        # the last position's logits only: a long prompt's would be P x vocab floats nobody reads
        out.append(sampler(model.logits(h[0, -1])))
        if on_tokens:
            on_tokens(out[-1:])
        if out[-1] in eos_ids or len(out) == max_new_tokens:
            return out, {"steps": steps}
        x = torch.tensor([[out[-1]]], device=device)
        steps += 1


# ----------------------------------------------------------------------------- drafts

@dataclass(frozen=True)
class SelfSpec:
    """Self-speculative decoding's drafter: the base model itself with some blocks skipped.
    No weights of its own; generate_tree gives it a KV cache of its own."""

    skip: tuple  # 0-based indices of the blocks the draft model leaves out
    k: int       # tokens drafted per step
    kind = "self-spec"


def parse_skip(spec, n_layers):
    """'2,3', '2-4' or '0,2-3' (0-based block indices, inclusive ranges) -> sorted tuple of the
    blocks the self-spec draft model skips, checked. None: a quarter of the blocks, centred.
    (For the shipped 6-block model that is block 2 alone, the fastest set in bench.py's search.)"""
    if spec is None:
        n = max(1, n_layers // 4)
        return tuple(range((n_layers - n) // 2, (n_layers - n) // 2 + n))  # 6 blocks: (2,)
    blocks = set()
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            lo, hi = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ValueError(f"bad --skip {spec!r}: write 0-based block indices and inclusive ranges, "
                             f"like 2,3 or 2-4") from None
        if lo > hi:
            raise ValueError(f"bad --skip range {part.strip()!r}: write it low-high, like 2-4")
        blocks.update(range(lo, hi + 1))
    if max(blocks) >= n_layers:
        raise ValueError(f"--skip {spec!r}: block {max(blocks)} does not exist, this model has blocks "
                         f"0..{n_layers - 1} (indices are 0-based)")
    if len(blocks) == n_layers:
        raise ValueError(f"--skip {spec!r} skips all {n_layers} blocks: the draft model must keep at least one")
    return tuple(sorted(blocks))


def skip_forward(model, layers, tokens, cache):
    """The self-spec draft model: embedding, only the blocks in `layers`, final norm, LM head.
    tokens (T,) follow the cache's committed entries -> logits (T, V); entries left pending."""
    pos = model.positions(cache.length, tokens.shape[0], tokens.device)
    h = model.embed(tokens[None])                                   # (1, T, d)
    for i in layers:  # one block at a time: the kept blocks need not be contiguous
        h = model.run_blocks(h, pos, None, cache, i, i + 1)
    return model.logits(h)[0]                                       # (T, V)


def self_spec_drafts(model, layers, k, cache, fed, seq):
    """Draft k tokens greedily with the layer-skipping model, after the root seq[-1].

    cache, the draft model's own, holds entries for the tokens in the list `fed`
    (updated in place), which may end with drafts the full model rejected. Keep the
    entries that agree with seq (prompt + output so far), feed the accepted tokens the
    draft model has not seen (the root at least), then one drafted token at a time.
    Returns the draft logits (k, V): row i's argmax is the token fed next, so the top-1
    chain of the rows is the draft model's greedy chain, whether we sample or not.
    """
    n = 0
    # the root is always fed again, even when a draft guessed it: its logits start the chain
    while n < min(len(fed), len(seq) - 1) and fed[n] == seq[n]:
        n += 1
    cache.rewind(n)  # slots [0, n) still hold the accepted tokens' entries
    del fed[n:]
    x, rows = seq[n:], []
    for _ in range(k):
        logits = skip_forward(model, layers, torch.tensor(x, device=cache.k.device), cache)[-1]  # (V,)
        cache.commit()
        fed += x
        rows.append(logits)
        x = [int(logits.argmax())]
    return torch.stack(rows)                                        # (k, V)


def draft_source(model, drafter, max_len):
    """-> next_drafts(row, seq): draft logits (k, V) D_1..D_k for the k tokens after the root
    seq[-1]. Hidden transfer and Medusa read them off the last verify pass at the accepted
    node (row: its entry of tree_pass's second output; hidden transfer drafting from an
    ancestor, its pseudo states s+1..k: k-s rows); self-spec runs its draft model."""
    if drafter.kind != "self-spec":
        return lambda row, seq: draft_logits(model, drafter, row)
    layers = [i for i in range(model.args.n_layers) if i not in drafter.skip]
    # its writes reach k-1 positions past the root, which is at most the last output token
    cache, fed = model.new_cache(max_len=max_len + drafter.k), []
    return lambda row, seq: self_spec_drafts(model, layers, drafter.k, cache, fed, seq)


# ----------------------------------------------------------------------------- tree decoding

@functools.lru_cache(maxsize=32)
def tree_planner(tree_spec, k, device="cpu"):
    """-> (plan(draft) -> (tree, draft_ids), largest tree size). Static trees are built once
    (per spec, k and device: generate_tree calls share them); "dynamic-N" builds per step the
    N nodes with the highest product of draft probabilities. Each tree is moved to `device`
    once, when it is built."""
    if tree_spec.startswith("dynamic"):
        name, _, n = tree_spec.partition("-")
        n = n or "16"
        if name != "dynamic" or not n.isdigit() or int(n) < 1:
            raise ValueError(f"bad tree {tree_spec!r}: write dynamic-N with N >= 1 nodes, e.g. dynamic-16")
        n = int(n)
        width = 4  # ranks considered per depth

        def plan(draft):
            top = draft.float().softmax(-1).topk(width, dim=-1)  # (k, width) probs and ids
            return build_tree(dynamic_tree(top.values, n)).to(device), top.indices
        return plan, n + 1
    paths = parse_tree(tree_spec, k)
    # clipped to the draft rows a step has: k, or fewer when it drafts from an ancestor (spawn)
    trees = [build_tree(clip(paths, depth)).to(device) for depth in range(k + 1)]
    return (lambda draft: (trees[len(draft)], draft.topk(trees[len(draft)].width, dim=-1).indices)), trees[k].n_nodes


@functools.lru_cache(maxsize=8)
def root_only(device):
    """The one-node tree of the prefill's pass (the prompt's last token)."""
    return build_tree([]).to(device)


@functools.lru_cache(maxsize=64)
def tree_layout(tree, n_pseudo, spawn=None):
    """A tree's pass, built once per tree (a static tree's, once for every call): position
    offsets from the root (M,), the mask (M, M) over [nodes ; pseudo tokens], M = N + n*n_pseudo,
    the largest offset, and the n nodes that carry pseudo tokens: the first `spawn` (None: all),
    the likeliest to end a step, as nodes are ordered by depth, then rank."""
    n = tree.n_nodes if spawn is None else min(spawn, tree.n_nodes)
    spawning = torch.arange(n, device=tree.mask.device)
    mask, pos = pseudo_layout(tree.mask, tree.depth, n_pseudo, spawning)
    return pos, mask, tree.max_depth + n_pseudo, spawning


def drafting_node(tree, node, spawn):
    """Where the next drafts come from when pseudo tokens sit on the first `spawn` nodes only:
    the accepted node itself if it has them, else its deepest ancestor that does, s levels up.
    -> (that node, s). Its pseudo states s+1..k stand in for the tokens after the next root."""
    s = 0
    while spawn is not None and node >= spawn:
        node, s = tree.parents[node], s + 1
    return node, s


def tree_pass(model, drafter, layout, tokens, cache):
    """The one forward pass of a decoding step: the tree's nodes, tokens (N,), on top of the
    cached prefix -> the nodes' hidden states after block L (N, d), and per node what
    draft_logits reads the next drafts from: its k pseudo states (N, k, d), or (Medusa,
    self-spec) its own final hidden state (N, d). Entries are left pending in the cache."""
    pos, tree_mask, last, spawning = layout
    m, M = cache.length, tree_mask.shape[0]                  # the root sits at position m
    if m + last >= model.args.max_seq_len:
        raise ValueError(f"position {m + last} is beyond max_seq_len={model.args.max_seq_len}")
    mask = tree_mask.new_ones(M, m + M)                      # every token sees the whole prefix ...
    mask[:, m:] = tree_mask                                  # ... and what the tree allows: (M, m + M)
    if drafter.kind == "hidden-transfer":
        h, pseudo = ht_forward(model, drafter, tokens[None], m + pos, mask, cache, spawning)
        return h[0], pseudo[-1][0]
    h = model.run_blocks(model.embed(tokens[None]), m + pos, mask, cache)[0]  # all blocks
    return h, h


def verify(tree, tokens, logits, sampler):
    """Walk the tree from the root, accepting children the model agrees with.

    Returns (accepted node indices root..a, the model's next token after node a).
    Greedy: a child is accepted when it is its parent's argmax. Sampling: recursive
    rejection over the deterministic children (docs/method.md), which emits each token
    with exactly the model's distribution.
    """
    if sampler.greedy:
        next_ids = logits.argmax(-1)                                           # (N,)
        path = greedy_accept(tree, tokens, next_ids)                           # (n,) root .. a
        ids = torch.cat([path, next_ids[path[-1:]]]).tolist()                  # one read from the device
        return ids[:-1], ids[-1]
    node, path = 0, [0]
    while True:
        residual = sampler.probs(logits[node])  # (V,) the model's distribution at this node
        for c in tree.children(node).tolist():  # fixed order: rank order
            tok = int(tokens[c])
            if sampler.uniform() < residual[tok]:
                node = c
                break
            # rejected: the token is no longer possible here; renormalise the rest
            residual[tok] = 0.0
            residual /= residual.sum()
        else:
            return path, sampler.sample(residual)
        path.append(node)


def emitted(new, room, eos_ids):
    """A step's tokens, cut to the `room` left under the token limit and after the first EOS:
    either can fall inside the accepted path."""
    new = new[:room]
    for i, tok in enumerate(new):
        if tok in eos_ids:
            return new[: i + 1]
    return new


@torch.inference_mode()
def generate_tree(model, drafter, prompt_ids, max_new_tokens, sampler, tree_spec="small",
                  eos_ids=(), on_tokens=None, spawn=None):
    """Tree decoding with any drafter: HiddenTransfer, Medusa or SelfSpec.

    Every step verifies a candidate tree in one pass of the full model and emits the
    accepted path plus the model's own next token. The next drafts come from that same
    pass (hidden transfer: the accepted node's pseudo tokens; Medusa: the heads on the
    accepted node's final hidden state) or, for self-spec, from the layer-skipping
    draft model run afterwards. Returns (token ids, stats).

    spawn (hidden transfer): pseudo tokens on the first `spawn` nodes of each tree only (None:
    all). A smaller pass; a step that ends on a node without them drafts from its deepest
    ancestor that has them, with fewer rows (drafting_node), and its next tree is shallower.
    """
    device, P = model.device, len(prompt_ids)
    plan, max_nodes = tree_planner(tree_spec, drafter.k, device)
    n_pseudo = drafter.k if drafter.kind == "hidden-transfer" else 0  # pseudo tokens per tree node
    spawn = spawn if n_pseudo else None
    # committed tokens never exceed prompt + output; one pass adds N nodes + N*n_pseudo pseudo tokens
    cache = model.new_cache(max_len=P + max_new_tokens + max_nodes * (1 + n_pseudo))
    next_drafts = draft_source(model, drafter, P + max_new_tokens)

    # Prefill all prompt tokens but the last, as plain decoding would (no logits: nobody reads
    # them). The last is the root of a one-node tree, whose pass gives the first token and
    # (hidden transfer, Medusa) the first drafts.
    if P > 1:
        x = torch.tensor([prompt_ids[:-1]], device=device)                  # (1, P-1)
        model.run_blocks(model.embed(x), model.positions(0, P - 1, device), cache=cache)
        cache.commit()
    last = torch.tensor(prompt_ids[-1:], device=device)                      # (1,)
    h, source = tree_pass(model, drafter, tree_layout(root_only(device), n_pseudo, spawn), last, cache)
    cache.commit()
    out, row, hist, from_ancestor = [sampler(model.logits(h[0]))], source[0], Counter(), 0
    if on_tokens:
        on_tokens(out[:])
    while out[-1] not in eos_ids and len(out) < max_new_tokens:
        tree, draft_ids = plan(next_drafts(row, prompt_ids + out))           # drafts after the root out[-1]
        tokens = candidates(tree, out[-1], draft_ids)                        # (N,)
        h, source = tree_pass(model, drafter, tree_layout(tree, n_pseudo, spawn), tokens, cache)
        path, root = verify(tree, tokens, model.logits(h), sampler)
        cache.commit(path)  # keep the accepted path, contiguous; drop the rest and all pseudo tokens
        node, s = drafting_node(tree, path[-1], spawn)                       # the next drafts come from here
        row, from_ancestor = source[node, s:], from_ancestor + (s > 0)          # s = 0: all of node's entry
        new = emitted(tokens[path[1:]].tolist() + [root], max_new_tokens - len(out), eos_ids)
        hist[len(new)] += 1
        out += new
        if on_tokens:
            on_tokens(new)
    stats = {"steps": sum(hist.values()), "accept_hist": {str(n): hist[n] for n in sorted(hist)}}
    return out, stats | ({"drafts_from_an_ancestor": from_ancestor} if spawn is not None else {})


# ----------------------------------------------------------------------------- command line

class Streamer:
    """Prints the completion as tokens arrive; with trace, each step's tokens in alternating colours.

    Decodes only the last few tokens each time (linear in the output, not quadratic), with
    a little context in front so that a piece keeps its leading space, and holds back half
    of a multi-byte character until the rest arrives."""

    COLOURS = ("\033[32m", "\033[36m")  # green, cyan

    def __init__(self, tok, prompt_ids, trace=False):
        self.tok, self.trace, self.n = tok, trace, 0
        self.ids = list(prompt_ids[-4:])           # context for the first piece
        self.start, self.read = 0, len(self.ids)   # ids[start:read] is already printed

    def __call__(self, new):
        self.ids += new
        done = self.tok.decode(self.ids[self.start:self.read])
        text = self.tok.decode(self.ids[self.start:])
        if text.endswith("\ufffd") or len(text) <= len(done):
            return  # half of a multi-byte character (or nothing visible): wait for the rest
        piece = text[len(done):]
        if self.trace:
            piece = self.COLOURS[self.n % 2] + piece + "\033[0m"
            self.n += 1
        print(piece, end="", flush=True)
        self.start, self.read = self.read, len(self.ids)


def completion_text(tok, prompt_ids, ids):
    # decode with the prompt's last tokens in front, so that the first piece keeps its leading space
    context = list(prompt_ids[-4:])
    return tok.decode(context + list(ids))[len(tok.decode(context)):]


def check_length(model, n_prompt, max_new_tokens, lookahead=0):
    """Refuse before any work a request that does not fit the model's context."""
    need = n_prompt + max_new_tokens + lookahead
    if need > model.args.max_seq_len:
        extra = f" + {lookahead} positions of tree and drafts" if lookahead else ""
        raise ValueError(f"the prompt ({n_prompt} tokens) + --max-new-tokens {max_new_tokens}{extra} "
                         f"= {need} positions, more than the model's context of {model.args.max_seq_len}; "
                         f"shorten the prompt or lower --max-new-tokens")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="Hugging Face, Meta or project checkpoint folder, a .gguf file or a folder holding "
                        "one (default: the shipped Shakespeare model)")
    p.add_argument("--prompt", default=None, help=f"default: {DEFAULT_PROMPT!r}; with --chat, none = interactive")
    p.add_argument("--chat", action="store_true",
                   help="the prompt is a user message, rendered with the model's chat template; without "
                        "--prompt, an interactive chat in the terminal")
    p.add_argument("--system", default=None, help="with --chat: a system message")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: the checkpoint's decode.json, else float32 on cpu, bfloat16 on cuda and mps")
    p.add_argument("--method", choices=["ar", "hidden-transfer", "medusa", "self-spec"], default=None,
                   help=f"default: hidden-transfer when the checkpoint holds {DRAFTER_FILES['hidden-transfer']}, else ar")
    p.add_argument("--drafter", default=None,
                   help="hidden-transfer or medusa drafter file, or 'init' for an untrained one (default, "
                        "by --method: " + " or ".join(f"CHECKPOINT/{f}" for f in DRAFTER_FILES.values()) + ")")
    p.add_argument("--tree", default=None, help="preset (root, chain, small, medium, wide), dynamic-N, "
                                                "full-W1xW2x... (every top-W_d rank at depth d), "
                                                "or JSON rank paths like [[0],[0,0],[1]] "
                                                "(default: the checkpoint's decode.json, else chain for "
                                                "self-spec and small for the others)")
    p.add_argument("--spawn", type=int, default=None,
                   help="hidden-transfer: pseudo tokens on the first N nodes of each tree only, the likeliest "
                        "to end a step (default: the checkpoint's decode.json, else every node)")
    p.add_argument("--draft-vocab", type=int, default=None,
                   help="hidden-transfer, medusa: draft from the N tokens the drafter's training text used most, "
                        "0 = the whole vocabulary (default: the checkpoint's decode.json, else 0); the output "
                        "is the same, a step's LM-head work smaller")
    p.add_argument("--k", type=int, default=4,
                   help="draft positions of an init drafter; tokens drafted per step by self-spec")
    p.add_argument("--layer", type=int, default=None, help="transfer layer of an init drafter (default L/2)")
    p.add_argument("--skip", default=None,
                   help="self-spec: the blocks its draft model skips, 0-based indices and inclusive ranges, "
                        "like 2,3 or 1-3 (default: a quarter of the blocks, centred: 2 for 6 blocks)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the checkpoint's decode.json, else torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("--trace", action="store_true", help="colour the tokens each step emits")
    a = p.parse_args(argv)
    for flag, ok, rule in [("--max-new-tokens", a.max_new_tokens >= 1, ">= 1"),
                           ("--temperature", a.temperature >= 0, ">= 0"),
                           ("--top-p", 0 < a.top_p <= 1, "in (0, 1]"), ("--top-k", a.top_k >= 0, ">= 0"),
                           ("--k", a.k >= 1, ">= 1"), ("--threads", a.threads is None or a.threads >= 1, ">= 1"),
                           ("--spawn", a.spawn is None or a.spawn >= 1, ">= 1 (the root always drafts)"),
                           ("--draft-vocab", a.draft_vocab is None or a.draft_vocab >= 0, ">= 0 (0: every token)")]:
        if not ok:
            p.error(f"{flag} must be {rule}")
    if a.system is not None and not a.chat:
        p.error("--system applies to --chat")
    if a.json and a.chat and a.prompt is None:
        p.error("--json needs --prompt: an interactive chat cannot be one JSON object")
    folder = a.checkpoint if os.path.isdir(a.checkpoint) else os.path.dirname(a.checkpoint)
    a.method_defaulted = a.method is None
    a.method = a.method or ("hidden-transfer" if a.drafter or os.path.exists(
        os.path.join(folder, DRAFTER_FILES["hidden-transfer"])) else "ar")
    # flags that would otherwise be silently ignored
    for flag, value, methods in [("--drafter", a.drafter, ["hidden-transfer", "medusa"]),
                                 ("--layer", a.layer, ["hidden-transfer"]),
                                 ("--spawn", a.spawn, ["hidden-transfer"]),
                                 ("--draft-vocab", a.draft_vocab, ["hidden-transfer", "medusa"]),
                                 ("--skip", a.skip, ["self-spec"]),
                                 ("--tree", a.tree, ["hidden-transfer", "medusa", "self-spec"])]:
        if value is not None and a.method not in methods:
            p.error(f"{flag} applies to --method {' or '.join(methods)}, not {a.method}")
    # what measured fastest for this checkpoint (bench.py), where it ships a decode.json
    settings = os.path.join(folder, "decode.json")
    defaults = json.load(open(settings)) if os.path.exists(settings) and a.method != "ar" else {}
    a.tree = a.tree or defaults.get("tree") or ("chain" if a.method == "self-spec" else "small")
    a.dtype = a.dtype or defaults.get("dtype")
    a.threads = a.threads or defaults.get("threads")
    a.spawn = a.spawn or (defaults.get("spawn") if a.method == "hidden-transfer" else None)
    a.drafter_file = a.drafter or os.path.join(folder, DRAFTER_FILES.get(a.method, ""))
    # decode.json's draft vocabulary is for the drafters it was measured with: one without token counts
    # (an init drafter, an older file) or with LM heads of its own (Medusa-1) drafts from every token,
    # where --draft-vocab N would be an error
    a.draft_vocab_defaulted = a.draft_vocab is None
    a.draft_vocab = a.draft_vocab if a.draft_vocab is not None else defaults.get("draft_vocab", 0)
    return a


def load(a):
    """-> model, tokenizer, drafter (None for plain decoding) and how many positions past the
    root a step may write (tree nodes, pseudo tokens or a self-spec chain)."""
    device = pick_device(a.device)
    dtype = DTYPES[a.dtype or ("float32" if device == "cpu" else "bfloat16")]
    model = Transformer.from_pretrained(a.checkpoint, device=device, dtype=dtype)
    tok = Tokenizer(a.checkpoint)
    drafter, lookahead = None, 0
    if a.method in DRAFTER_FILES:
        drafter = (block_linears_(new_drafter(a.method, model, a.k, a.layer).to(device=device, dtype=dtype).eval())
                   if a.drafter == "init" else load_drafter(a.drafter_file, model, a.method))
        if not (a.draft_vocab_defaulted and (drafter.token_counts is None or getattr(drafter, "lm_heads", False))):
            restrict_vocab(drafter, model, a.draft_vocab)
    elif a.method == "self-spec":
        drafter = SelfSpec(parse_skip(a.skip, model.args.n_layers), a.k)
    if drafter:
        tree_planner(a.tree, drafter.k)  # a bad tree spec fails here, before any work
        depth = drafter.k if a.tree.startswith("dynamic") else build_tree(parse_tree(a.tree, drafter.k)).max_depth
        lookahead = {"hidden-transfer": depth + drafter.k, "medusa": depth, "self-spec": drafter.k}[a.method]
    return model, tok, drafter, lookahead


def generate(a, model, tok, drafter, lookahead, prompt_ids, stream=None):
    """Decode once with the chosen method -> the result dict --json prints."""
    check_length(model, len(prompt_ids), a.max_new_tokens, lookahead)
    sampler = Sampler(a.temperature, a.top_k, a.top_p, a.seed)
    t0 = time.perf_counter()
    if drafter is None:
        ids, stats = generate_ar(model, prompt_ids, a.max_new_tokens, sampler, tok.eos_ids, stream)
    else:
        ids, stats = generate_tree(model, drafter, prompt_ids, a.max_new_tokens, sampler, a.tree, tok.eos_ids, stream,
                                   a.spawn)
    seconds = time.perf_counter() - t0
    steps = stats.pop("steps")
    result = {
        "method": a.method, "prompt": a.prompt, "prompt_ids": prompt_ids,
        "text": completion_text(tok, prompt_ids, ids), "token_ids": ids,
        "stopped": "end of text" if ids and ids[-1] in tok.eos_ids else "token limit",
        "steps": steps,
        # the prefill emits the first token; every later one comes from a decoding step
        "tokens_per_step": (len(ids) - 1) / steps if steps else None,
        "seconds": seconds, "tokens_per_second": len(ids) / seconds, **stats,
    }
    if drafter:
        result |= {"tree": a.tree, "k": drafter.k}
    if a.method == "hidden-transfer":
        result |= {"layer": drafter.layer, "spawn": a.spawn}  # spawn None: pseudo tokens on every node
    if a.method in DRAFTER_FILES:
        result["drafter"] = "init" if a.drafter == "init" else a.drafter_file
        result["draft_vocab"] = len(drafter.vocab_head.ids) if drafter.vocab_head else model.args.vocab_size
    if a.method == "self-spec":
        result["skip"] = list(drafter.skip)
    return result


def summary(r):
    return (f"[{r['method']}: {len(r['token_ids'])} tokens in {r['seconds']:.2f}s, {r['tokens_per_second']:.1f} "
            f"tokens/s, {r['steps']} steps, {r['tokens_per_step'] or 0:.2f} tokens/step, stopped: {r['stopped']}]")


def chat_loop(a, model, tok, drafter, lookahead):
    """An interactive chat: each reply streams, then its speed. The whole conversation is
    rendered with the chat template again every turn."""
    messages = [{"role": "system", "content": a.system}] if a.system else []
    print("[chat: /reset starts over, /exit or Ctrl-D ends]", file=sys.stderr)
    while True:
        try:
            user = input("\n> ").strip()
        except EOFError:
            return
        if user in ("/exit", "/quit"):
            return
        if user == "/reset":
            messages = messages[:1] if a.system else []
            continue
        if not user:
            continue
        messages.append({"role": "user", "content": user})
        prompt_ids = tok.apply_chat_template(messages)
        try:
            r = generate(a, model, tok, drafter, lookahead, prompt_ids, Streamer(tok, prompt_ids, a.trace))
        except ValueError as e:
            messages.pop()
            print(f"error: {e} (/reset to start over)", file=sys.stderr)
            continue
        messages.append({"role": "assistant", "content": r["text"].strip()})
        print("\n" + summary(r), file=sys.stderr)


def main(argv=None):
    a = parse_args(argv)
    if a.method_defaulted and not a.json:
        print(f"[method: {a.method}]", file=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        model, tok, drafter, lookahead = load(a)
        if a.chat and not tok.chat_template:
            raise ValueError(f"--chat: {a.checkpoint} has no chat template (tokenizer_config.json chat_template, "
                             f"chat_template.jinja or GGUF tokenizer.chat_template); drop --chat and write the "
                             f"prompt yourself")
        if a.chat and a.prompt is None:
            return chat_loop(a, model, tok, drafter, lookahead)
        a.prompt = DEFAULT_PROMPT if a.prompt is None else a.prompt
        messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": a.prompt}]
        prompt_ids = tok.apply_chat_template(messages) if a.chat else tok.encode(a.prompt)
        if a.json:
            return print(json.dumps(generate(a, model, tok, drafter, lookahead, prompt_ids)))
        check_length(model, len(prompt_ids), a.max_new_tokens, lookahead)  # before printing anything
        if not a.chat:
            print(a.prompt, end="", flush=True)
        r = generate(a, model, tok, drafter, lookahead, prompt_ids, Streamer(tok, prompt_ids, a.trace))
        print("\n\n" + summary(r), file=sys.stderr)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
