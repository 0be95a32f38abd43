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
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import torch

from model import Tokenizer, Transformer, column_major_
from transfer import draft_logits, load_drafter, new_drafter
from tree import build_tree, candidates, dynamic_tree, greedy_accept, parse_tree, pseudo_mask, pseudo_positions

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
    device = model.output.weight.device
    cache = model.new_cache(max_len=len(prompt_ids) + max_new_tokens)
    x = torch.tensor([prompt_ids], device=device)  # (1, P)
    out, steps = [], 0
    while True:
        logits = model(x, cache=cache)[0, -1]  # (V,) at the last position
        cache.commit()
        out.append(sampler(logits))
        if on_tokens:
            on_tokens(out[-1:])
        if out[-1] in eos_ids or len(out) == max_new_tokens:
            return out, {"steps": steps}
        x = torch.tensor([[out[-1]]], device=device)
        steps += 1


# ----------------------------------------------------------------------------- tree decoding

def ht_forward(model, drafter, tokens, pos, mask_lower, mask_upper, cache):
    """The one pass: N tree nodes through blocks 1..t, each node spawns k pseudo tokens
    from its own h^t, blocks t+1..L run over [nodes ; pseudo]. Every pending cache
    entry is left for the caller to commit.

    tokens (N,), pos (N + N*k,) -> node hidden states (N, d), pseudo states (N, k, d).
    """
    N, t, k = tokens.shape[0], drafter.layer, drafter.k
    h = model.run_blocks(model.embed(tokens[None]), pos[:N], mask_lower, cache, 0, t)  # (1, N, d)
    pseudo = drafter(h).flatten(1, 2)                                                  # (1, N*k, d)
    h = model.run_blocks(torch.cat([h, pseudo], 1), pos, mask_upper, cache, t)        # (1, N + N*k, d)
    return h[0, :N], h[0, N:].unflatten(0, (N, k))


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
    pos = torch.arange(cache.length, cache.length + tokens.shape[0], device=tokens.device)
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
        # keep all fed entries; commit() alone would count block 0's writes, and block 0 may be skipped
        cache.commit(list(range(len(x))))
        fed += x
        rows.append(logits)
        x = [int(logits.argmax())]
    return torch.stack(rows)                                        # (k, V)


def verify(tree, tokens, logits, sampler):
    """Walk the tree from the root, accepting children the model agrees with.

    Returns (accepted node indices root..a, the model's next token after node a).
    Greedy: a child is accepted when it is its parent's argmax. Sampling: recursive
    rejection over the deterministic children (METHOD.md), which emits each token
    with exactly the model's distribution.
    """
    if sampler.greedy:
        path = greedy_accept(tree, tokens, logits.argmax(-1)).tolist()
        return path, int(logits[path[-1]].argmax())
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


def tree_planner(tree_spec, k):
    """-> (plan(draft) -> (tree, draft_ids), largest tree size). Static trees are built once;
    "dynamic-N" builds per step the N nodes with the highest product of draft probabilities."""
    if tree_spec.startswith("dynamic"):
        name, _, n = tree_spec.partition("-")
        n = n or "16"
        if name != "dynamic" or not n.isdigit() or int(n) < 1:
            raise ValueError(f"bad tree {tree_spec!r}: write dynamic-N with N >= 1 nodes, e.g. dynamic-16")
        n = int(n)
        width = 4  # ranks considered per depth

        def plan(draft):
            top = draft.float().softmax(-1).topk(width, dim=-1)  # (k, width) probs and ids
            return build_tree(dynamic_tree(top.values, n)), top.indices
        return plan, n + 1
    tree = build_tree(parse_tree(tree_spec, k))
    return (lambda draft: (tree, draft.topk(tree.width, dim=-1).indices)), tree.n_nodes


@torch.inference_mode()
def generate_tree(model, drafter, prompt_ids, max_new_tokens, sampler, tree_spec="small",
                  eos_ids=(), on_tokens=None):
    """Tree decoding with any drafter: HiddenTransfer, Medusa or SelfSpec.

    Every step verifies a candidate tree in one pass of the full model and emits the
    accepted path plus the model's own next token. The next drafts come from that same
    pass (hidden transfer: the accepted node's pseudo tokens; Medusa: the heads on the
    accepted node's final hidden state) or, for self-spec, from the layer-skipping
    draft model run afterwards. Returns (token ids, stats).
    """
    device = model.output.weight.device
    k = drafter.k
    n_pseudo = k if drafter.kind == "hidden-transfer" else 0  # pseudo tokens per tree node
    plan, max_nodes = tree_planner(tree_spec, k)
    # committed tokens never exceed prompt + output; one pass adds N nodes + N*n_pseudo pseudo tokens
    cache = model.new_cache(max_len=len(prompt_ids) + max_new_tokens + max_nodes * (1 + n_pseudo))
    last = [None, None]  # (tree, its positions and mask): a static tree builds them once

    def one_pass(tree, tokens):
        """tokens (N,) of the tree nodes -> node hidden states after block L (N, d), and per
        node what draft_logits reads drafts from: pseudo states (N, k, d) or the nodes' own (N, d)."""
        if last[0] is not tree:  # compare objects, not id(): a dead tree's id can be reused
            last[:] = [tree, (pseudo_positions(tree, n_pseudo).to(device), pseudo_mask(tree, n_pseudo).to(device))]
        pos, pm = last[1]                                             # (N + N*p,), (N + N*p, N + N*p)
        m, N = cache.length, tree.n_nodes                             # the root sits at position m
        prefix = torch.ones(pm.shape[0], m, dtype=torch.bool, device=device)  # all see the prefix
        mask = torch.cat([prefix, pm], 1)                             # (N + N*p, m + N + N*p)
        if drafter.kind == "hidden-transfer":
            return ht_forward(model, drafter, tokens, m + pos, mask[:N, : m + N], mask, cache)
        h = model.run_blocks(model.embed(tokens[None]), m + pos, mask, cache)[0]  # (N, d): all blocks
        return h, h

    if drafter.kind == "self-spec":
        layers = [i for i in range(model.args.n_layers) if i not in drafter.skip]
        # its writes reach k-1 positions past the root, which is at most the last output token
        draft_cache, fed = model.new_cache(max_len=len(prompt_ids) + max_new_tokens + k), []

    def next_drafts(source, node, seq):
        """(k, V) draft logits D_1..D_k for the tokens after the root seq[-1], node's next token."""
        if drafter.kind == "self-spec":
            return self_spec_drafts(model, layers, k, draft_cache, fed, seq)
        return draft_logits(model, drafter, source[node])

    # Prefill: all prompt tokens but the last go into the cache as in plain decoding;
    # the last one is the root of a one-node tree, whose pass gives the first token
    # (and, for hidden transfer and Medusa, the first drafts).
    if len(prompt_ids) > 1:
        model(torch.tensor([prompt_ids[:-1]], device=device), cache=cache)
        cache.commit()
    h, source = one_pass(build_tree([]), torch.tensor([prompt_ids[-1]], device=device))
    cache.commit()  # the root is node 0; commit() keeps exactly the N=1 pending node entries
    root, node = sampler(model.logits(h[0])), 0
    out, hist, steps = [root], Counter(), 0
    if on_tokens:
        on_tokens([root])
    while root not in eos_ids and len(out) < max_new_tokens:
        draft = next_drafts(source, node, prompt_ids + out)           # (k, V), only when a step follows
        tree, draft_ids = plan(draft)
        tokens = candidates(tree, root, draft_ids)                    # (N,)
        h, source = one_pass(tree, tokens)
        path, root = verify(tree, tokens, model.logits(h), sampler)
        cache.commit(path)  # keep the accepted path, contiguous; drop the rest and all pseudo tokens
        node = path[-1]                                               # the next drafts come from here
        steps += 1
        new = tokens[path[1:]].tolist() + [root]                      # accepted drafts + the model's own token
        # EOS or the token limit can fall inside the accepted path: stop exactly there
        new = new[: max_new_tokens - len(out)]
        for i, tok in enumerate(new):
            if tok in eos_ids:
                new = new[: i + 1]
                break
        hist[len(new)] += 1
        out += new
        root = new[-1]
        if on_tokens:
            on_tokens(new)
    return out, {"steps": steps, "accept_hist": {str(n): hist[n] for n in sorted(hist)}}


# ----------------------------------------------------------------------------- command line

class Streamer:
    """Prints the completion as it grows; with trace, each step's tokens in alternating colours."""

    COLOURS = ("\033[32m", "\033[36m")  # green, cyan

    def __init__(self, tok, prompt_ids, trace=False):
        self.tok, self.trace = tok, trace
        self.prompt = list(prompt_ids[1:] if prompt_ids[:1] == [tok.bos_id] else prompt_ids)
        self.ids, self.shown, self.n = [], "", 0

    def text(self, ids):
        # decode with the prompt in front, so that the first piece keeps its leading space
        return self.tok.decode(self.prompt + ids)[len(self.tok.decode(self.prompt)):]

    def __call__(self, new):
        self.ids += new
        text = self.text(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return  # half of a multi-byte character: wait for the rest
        piece = text[len(self.shown):]
        if self.trace:
            piece = self.COLOURS[self.n % 2] + piece + "\033[0m"
            self.n += 1
        print(piece, end="", flush=True)
        self.shown = text


def check_length(model, n_prompt, max_new_tokens, lookahead=0):
    """Refuse before any work a request that does not fit the model's context."""
    need = n_prompt + max_new_tokens + lookahead
    if need > model.args.max_seq_len:
        extra = f" + {lookahead} positions of tree and drafts" if lookahead else ""
        raise SystemExit(f"error: the prompt ({n_prompt} tokens) + --max-new-tokens {max_new_tokens}{extra} "
                         f"= {need} positions, more than the model's context of {model.args.max_seq_len}; "
                         f"shorten the prompt or lower --max-new-tokens")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="Hugging Face, Meta or project checkpoint folder (default: the shipped model)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: float32 on cpu, bfloat16 on cuda and mps")
    p.add_argument("--method", choices=["ar", "hidden-transfer", "medusa", "self-spec"], default=None,
                   help=f"default: hidden-transfer when the checkpoint holds {DRAFTER_FILES['hidden-transfer']}, else ar")
    p.add_argument("--drafter", default=None,
                   help="hidden-transfer or medusa drafter file, or 'init' for an untrained one (default, "
                        "by --method: " + " or ".join(f"CHECKPOINT/{f}" for f in DRAFTER_FILES.values()) + ")")
    p.add_argument("--tree", default=None, help="preset (root, chain, small, medium, wide), dynamic-N, "
                                                "or JSON rank paths like [[0],[0,0],[1]] "
                                                "(default: chain for self-spec, else small)")
    p.add_argument("--k", type=int, default=4,
                   help="draft positions of an init drafter; tokens drafted per step by self-spec")
    p.add_argument("--layer", type=int, default=None, help="transfer layer of an init drafter (default L/2)")
    p.add_argument("--skip", default=None,
                   help="self-spec: the blocks its draft model skips, 0-based indices and inclusive ranges, "
                        "like 2,3 or 1-3 (default: a quarter of the blocks, centred: 2 for 6 blocks)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for the shipped model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("--trace", action="store_true", help="colour the tokens each step emits")
    a = p.parse_args(argv)

    for flag, ok, rule in [("--max-new-tokens", a.max_new_tokens >= 1, ">= 1"),
                           ("--temperature", a.temperature >= 0, ">= 0"),
                           ("--top-p", 0 < a.top_p <= 1, "in (0, 1]"), ("--top-k", a.top_k >= 0, ">= 0"),
                           ("--k", a.k >= 1, ">= 1"), ("--threads", a.threads is None or a.threads >= 1, ">= 1")]:
        if not ok:
            p.error(f"{flag} must be {rule}")
    shipped = os.path.join(a.checkpoint, DRAFTER_FILES["hidden-transfer"])
    method = a.method or ("hidden-transfer" if a.drafter or os.path.exists(shipped) else "ar")
    # flags that would otherwise be silently ignored
    for flag, value, methods in [("--drafter", a.drafter, ["hidden-transfer", "medusa"]),
                                 ("--layer", a.layer, ["hidden-transfer"]),
                                 ("--skip", a.skip, ["self-spec"]),
                                 ("--tree", a.tree, ["hidden-transfer", "medusa", "self-spec"])]:
        if value is not None and method not in methods:
            p.error(f"{flag} applies to --method {' or '.join(methods)}, not {method}")
    if a.method is None and not a.json:
        print(f"[method: {method}]", file=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    from train import pick_device
    device = pick_device(a.device)
    dtype = DTYPES[a.dtype or ("float32" if device == "cpu" else "bfloat16")]
    drafter_file = a.drafter or os.path.join(a.checkpoint, DRAFTER_FILES.get(method, ""))
    tree_spec = a.tree or ("chain" if method == "self-spec" else "small")

    try:
        model = Transformer.from_pretrained(a.checkpoint, device=device, dtype=dtype)
        tok = Tokenizer(a.checkpoint)
        drafter, lookahead = None, 0
        if method in DRAFTER_FILES:
            drafter = (column_major_(new_drafter(method, model, a.k, a.layer).to(device=device, dtype=dtype).eval())
                       if a.drafter == "init" else load_drafter(drafter_file, model, method))
        elif method == "self-spec":
            drafter = SelfSpec(parse_skip(a.skip, model.args.n_layers), a.k)
        if drafter:
            tree_planner(tree_spec, drafter.k)  # a bad tree spec fails here, before any work
            depth = drafter.k if tree_spec.startswith("dynamic") else build_tree(parse_tree(tree_spec, drafter.k)).max_depth
            # positions past the root: tree nodes, and hidden transfer's pseudo tokens or
            # the self-spec draft model's chain beyond them
            lookahead = {"hidden-transfer": depth + drafter.k, "medusa": depth, "self-spec": drafter.k}[method]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    prompt_ids = tok.encode(a.prompt)
    check_length(model, len(prompt_ids), a.max_new_tokens, lookahead)

    sampler = Sampler(a.temperature, a.top_k, a.top_p, a.seed)
    stream = None if a.json else Streamer(tok, prompt_ids, a.trace)
    if stream:
        print(a.prompt, end="", flush=True)
    t0 = time.perf_counter()
    if method == "ar":
        ids, stats = generate_ar(model, prompt_ids, a.max_new_tokens, sampler, tok.eos_ids, stream)
    else:
        ids, stats = generate_tree(model, drafter, prompt_ids, a.max_new_tokens, sampler, tree_spec,
                                   tok.eos_ids, stream)
    seconds = time.perf_counter() - t0
    steps = stats.pop("steps")
    result = {
        "method": method, "prompt": a.prompt, "prompt_ids": prompt_ids,
        "text": Streamer(tok, prompt_ids).text(ids), "token_ids": ids,
        "steps": steps,
        # the prefill emits the first token; every later one comes from a decoding step
        "tokens_per_step": (len(ids) - 1) / steps if steps else None,
        "seconds": seconds, "tokens_per_second": len(ids) / seconds, **stats,
    }
    if drafter:
        result |= {"tree": tree_spec, "k": drafter.k}
    if method == "hidden-transfer":
        result["layer"] = drafter.layer
    if method in DRAFTER_FILES:
        result["drafter"] = "init" if a.drafter == "init" else drafter_file
    if method == "self-spec":
        result["skip"] = list(drafter.skip)
    if a.json:
        print(json.dumps(result))
    else:
        print(f"\n\n[{method}: {len(ids)} tokens in {seconds:.2f}s, {result['tokens_per_second']:.1f} tokens/s, "
              f"{steps} steps, {result['tokens_per_step'] or 0:.2f} tokens/step]", file=sys.stderr)


if __name__ == "__main__":
    main()
