"""Candidate trees: rank paths, tree-attention masks and greedy verification.

A tree is a list of rank paths in Medusa's "choices" format: [1, 0] is "the
rank-1 token of draft distribution D_1, then the rank-0 token of D_2". The root
(the next token, already decided) is implicit and is node 0. As in Medusa a
node's token depends only on its depth and rank, not on its parent.
Pure functions on small tensors, on the device of their inputs; nothing here knows
about models. The method: docs/method.md.
"""
import heapq
import json
from dataclasses import dataclass, fields, replace
from functools import cached_property

import torch


def chain(k):
    """The plain speculative chain: the top-1 draft at every depth."""
    return [[0] * d for d in range(1, k + 1)]


# Sparse trees shaped like Medusa's: more ranks where drafts are reliable (shallow
# depth, low rank), the all-top-1 path the longest. One line per depth; every
# preset is at most 4 deep and clip() cuts it to k.
PRESETS = {
    "root": [],  # no drafts: plain decoding through the tree machinery
    "chain": chain(8),  # deeper than any k we use, so clip() decides its depth
    "small": [
        [0], [1], [2],
        [0, 0], [0, 1], [1, 0],
        [0, 0, 0], [0, 0, 1],
        [0, 0, 0, 0],
    ],
    "medium": [
        [0], [1], [2], [3], [4],
        [0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [2, 0], [3, 0],
        [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 2, 0], [1, 0, 0],
        [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0],
    ],
    "wide": [
        [0], [1], [2], [3], [4], [5], [6], [7], [8], [9],
        [0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7],
        [1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [2, 0], [2, 1], [2, 2],
        [3, 0], [3, 1], [4, 0], [5, 0], [6, 0],
        [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5],
        [0, 1, 0], [0, 1, 1], [0, 1, 2], [0, 2, 0], [0, 2, 1], [0, 3, 0], [0, 4, 0],
        [1, 0, 0], [1, 0, 1], [1, 0, 2], [1, 1, 0], [2, 0, 0], [2, 1, 0],
        [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 1, 0],
        [0, 0, 1, 1], [0, 0, 2, 0], [0, 1, 0, 0], [1, 0, 0, 0],
    ],
}


def full(widths):
    """Every path whose rank at depth d is below widths[d-1]: "full-4x2" is the top 4 tokens of D_1,
    each followed by the top 2 of D_2 (4 + 8 nodes). Every tree whose ranks stay below these widths
    is a part of it and accepts no more, so large widths show how far any tree could take tau
    with the drafts it is given (analyze.py --taus)."""
    paths, level = [], [[]]
    for w in widths:
        level = [p + [r] for p in level for r in range(w)]
        paths += level
    return paths


def validate(paths, k=None):
    """Raise a ValueError naming the first bad path, and how to fix it."""
    seen = set()
    for p in paths:
        p = list(p)
        if not p:
            raise ValueError("tree path [] is not allowed: the root is implicit (node 0); drop the empty path")
        for r in p:
            # bool is an int subclass, and json turns `true` into one; reject it
            if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                raise ValueError(f"tree path {p}: ranks must be non-negative ints, got {r!r}")
        if k is not None and len(p) > k:
            raise ValueError(f"tree path {p} has depth {len(p)} > k={k} draft positions; "
                             f"drop it or use clip(paths, {k})")
        if tuple(p) in seen:
            raise ValueError(f"tree path {p} appears twice; remove the duplicate")
        seen.add(tuple(p))
    for p in paths:
        if len(p) > 1 and tuple(p[:-1]) not in seen:
            raise ValueError(f"tree path {list(p)} has no parent {list(p[:-1])}; add it "
                             f"(every prefix of a path must itself be a path)")


def clip(paths, k):
    """Drop paths deeper than k. Prefixes are shorter, so the result is still a tree."""
    return [list(p) for p in paths if len(p) <= k]


def parse_tree(spec, k):
    """A preset name, full-W1xW2x..., a JSON list like "[[0],[0,0],[1]]", or a list of paths -> validated paths."""
    if isinstance(spec, str):
        if spec in PRESETS:
            return clip(PRESETS[spec], k)
        if spec.startswith("full-"):
            widths = spec[5:].split("x")
            if not all(w.isdigit() and int(w) > 0 for w in widths):
                raise ValueError(f"bad tree {spec!r}: write full-W1xW2x... with widths >= 1 by depth, e.g. full-4x2")
            if len(widths) > k:
                raise ValueError(f"bad tree {spec!r}: {len(widths)} widths for k={k} draft positions; give at most {k}")
            spec = full([int(w) for w in widths])
        elif not spec.lstrip().startswith("["):
            raise ValueError(f"unknown tree {spec!r}: use one of {sorted(PRESETS)}, full-W1xW2x... "
                             f"or a JSON list of rank paths like [[0],[0,0],[1]]")
        else:
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as e:
                raise ValueError(f"could not parse tree {spec!r} as JSON ({e}); "
                                 f"write rank paths like [[0],[0,0],[1]]") from None
    if not isinstance(spec, list) or not all(isinstance(p, list) for p in spec):
        raise ValueError(f"tree must be a list of rank paths like [[0],[0,0],[1]], got {spec!r}")
    validate(spec, k)
    return [list(p) for p in spec]


@dataclass(frozen=True, eq=False)
class Tree:
    rank_paths: list  # node n > 0 is rank_paths[n - 1], e.g. [1, 0]; node 0 is the root
    depth: torch.Tensor  # (N,) root 0; a node's position is root position + depth
    rank: torch.Tensor  # (N,) rank of the node's token in D_depth (root: 0, unused)
    parent: torch.Tensor  # (N,) parent node index (root: -1)
    mask: torch.Tensor  # (N, N) bool, node a sees node b iff b is a or an ancestor of a

    # sizes come from the rank paths, not the tensors: reading a tensor on a GPU would wait for it
    @property
    def n_nodes(self):
        return len(self.rank_paths) + 1

    @cached_property
    def max_depth(self):
        return max(map(len, self.rank_paths), default=0)

    @cached_property
    def width(self):
        # how many top tokens each draft distribution must provide
        return max((p[-1] for p in self.rank_paths), default=0) + 1

    @cached_property
    def parents(self):
        # the parent tensor as Python ints, for walking up between passes without reading the device
        index = {(): 0} | {tuple(p): i + 1 for i, p in enumerate(self.rank_paths)}
        return [-1] + [index[tuple(p[:-1])] for p in self.rank_paths]

    def children(self, n):
        return (self.parent == n).nonzero().squeeze(1)  # ascending = rank order for siblings

    def path_to(self, n):
        # nodes are sorted by depth, so ascending ancestor indices run root -> n
        return self.mask[n].nonzero().squeeze(1)

    def to(self, device):
        """The same tree with its tensors on `device` (decoding moves each built tree once)."""
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if f.name != "rank_paths"})


def build_tree(paths):
    validate(paths)
    # sorting by (depth, path) puts parents before children and fixes the node order
    rank_paths = sorted((list(p) for p in paths), key=lambda p: (len(p), p))
    index = {(): 0} | {tuple(p): i + 1 for i, p in enumerate(rank_paths)}
    N = len(rank_paths) + 1
    depth = torch.tensor([0] + [len(p) for p in rank_paths])
    rank = torch.tensor([0] + [p[-1] for p in rank_paths])
    parent = torch.tensor([-1] + [index[tuple(p[:-1])] for p in rank_paths])
    mask = torch.zeros(N, N, dtype=torch.bool)
    mask[0, 0] = True
    for n in range(1, N):
        mask[n] = mask[parent[n]]  # the parent's row is complete: parents come first
        mask[n, n] = True
    return Tree(rank_paths, depth, rank, parent, mask)


def candidates(tree, root_token, draft_ids):
    """root_token: int; draft_ids: (k, s) top-s token ids of D_1..D_k -> (N,) node tokens."""
    if tree.n_nodes > 1 and (draft_ids.shape[0] < tree.max_depth or draft_ids.shape[1] < tree.width):
        raise ValueError(f"tree needs draft ids of shape >= ({tree.max_depth}, {tree.width}), "
                         f"got {tuple(draft_ids.shape)}")
    tokens = torch.empty(tree.n_nodes, dtype=torch.long, device=draft_ids.device)  # (N,)
    tokens[0] = root_token
    tokens[1:] = draft_ids[tree.depth[1:] - 1, tree.rank[1:]]
    return tokens


def pseudo_layout(node_mask, node_pos, k, spawn=None):
    """Hidden transfer's pass over [N nodes ; n*k pseudo tokens], pseudo i of spawn[s] at N + s*k + i-1.

    node_mask (N, N): which nodes each node sees; node_pos (N,): their positions; spawn (n,):
    the nodes that carry pseudo tokens, in increasing order (None: all, n = N). A tree's
    nodes, or a text's tokens: a text is a chain, each token's ancestors are the tokens
    before it, and this is then the training layout (transfer.training_mask), so training
    and decoding run one construction. Returns the mask (M, M) and positions (M,), M = N + n*k:
    nodes never see pseudo tokens; pseudo i of node n sees what n sees and pseudo 1..i of n;
    it stands in for the token i places after n, at position pos(n) + i.
    """
    N, device = node_mask.shape[0], node_mask.device
    spawn = torch.arange(N, device=device) if spawn is None else spawn
    n = len(spawn)
    mask = torch.zeros(N + n * k, N + n * k, dtype=torch.bool, device=device)
    mask[:N, :N] = node_mask
    mask[N:, :N] = node_mask[spawn].repeat_interleave(k, dim=0)                      # (n*k, N)
    own = torch.ones(k, k, dtype=torch.bool, device=device).tril()                   # (k, k)
    mask[N:, N:] = torch.kron(torch.eye(n, dtype=torch.bool, device=device), own)   # block diagonal
    pseudo = node_pos[spawn].repeat_interleave(k) + torch.arange(1, k + 1, device=device).repeat(n)
    return mask, torch.cat([node_pos, pseudo])


def pseudo_mask(tree, k):
    """The mask over [N tree nodes ; N*k pseudo tokens] (see pseudo_layout)."""
    return pseudo_layout(tree.mask, tree.depth, k)[0]


def pseudo_positions(tree, k):
    """(N + N*k,) position offsets from the root: node = depth, pseudo i of node n = depth(n) + i."""
    return pseudo_layout(tree.mask, tree.depth, k)[1]


def dynamic_tree(draft_probs, n_nodes, max_depth=None):
    """The n_nodes rank paths with the highest product of draft probabilities.

    draft_probs: (k, s) probabilities of the top-s tokens of D_1..D_k.
    """
    probs = draft_probs.tolist()
    max_depth = len(probs) if max_depth is None else min(max_depth, len(probs))
    # Probabilities are <= 1, so a path's prefix scores at least as high, and as a tuple
    # it sorts first on ties. Best-first search on (-score, path) therefore pops
    # exactly the top n_nodes, and every popped path's parent was popped before it.
    heap = [(-p, (r,)) for r, p in enumerate(probs[0])] if max_depth > 0 else []
    heapq.heapify(heap)
    out = []
    while heap and len(out) < n_nodes:
        neg, path = heapq.heappop(heap)
        out.append(list(path))
        if len(path) < max_depth:
            for r, p in enumerate(probs[len(path)]):
                heapq.heappush(heap, (neg * p, path + (r,)))
    return out


def greedy_accept(tree, tokens, next_ids):
    """tokens, next_ids: (N,) node tokens and the model's argmax at each node -> accepted nodes.
    The tree's tensors must be on the device of tokens and next_ids (Tree.to)."""
    ok = tokens == next_ids[tree.parent.clamp(min=0)]  # (N,) node's token is its parent's argmax
    ok[0] = True  # the root was decided by the previous step
    # a node is reached when every node on its root path is ok: no non-ok ancestor
    reached = ~(tree.mask & ~ok).any(dim=1)  # (N,)
    # deepest reached node; argmax returns the first maximum, so ties go to the lower index
    best = torch.where(reached, tree.depth, -1).argmax()
    return tree.path_to(best)  # (n_accepted,) root .. best, on the device of the inputs


def format_tree(tree, tokens=None, decode=None):
    """Draw the tree with node index, depth, rank and (optionally) the token text."""
    def label(n):
        s = f"{n} root" if n == 0 else f"{n} d{int(tree.depth[n])} r{int(tree.rank[n])}"
        if tokens is not None:
            t = int(tokens[n])
            s += f"  {decode([t])!r}" if decode else f"  {t}"
        return s

    lines = [label(0)]

    def walk(n, prefix):
        kids = tree.children(n).tolist()
        for i, c in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(prefix + ("└── " if last else "├── ") + label(c))
            walk(c, prefix + ("    " if last else "│   "))

    walk(0, "")
    return "\n".join(lines)


def format_mask(mask):
    """A bool mask as a grid of ■ (sees) and · (does not), with row and column indices."""
    M = mask.shape[0]
    w = len(str(M - 1))
    head = " " * w + " " + " ".join(str(j).rjust(w) for j in range(M))
    rows = [str(i).rjust(w) + " " + " ".join(("■" if v else "·").rjust(w) for v in mask[i].tolist())
            for i in range(M)]
    return "\n".join([head] + rows)
