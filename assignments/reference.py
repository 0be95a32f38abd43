"""Reference solutions: thin adapters around the project's own code.

The exercises take plain inputs (a parent list, a mask, raw cache tensors); the
project works on tree.Tree objects, a sampler and a KVCache. Each function below
converts, calls the project's function, and converts back, so that grading this
file with the autograder also checks tree.py, transfer.py, decode.py and model.py.

    HT_SOLUTION=reference python -m pytest -q test_autograder.py
"""
from dataclasses import replace
from functools import lru_cache

import torch

from decode import verify
from model import KVCache
from transfer import training_mask
from tree import build_tree, greedy_accept, pseudo_mask


def as_tree(parents):
    """A parent list -> a tree.Tree whose node n is the exercise's node n.

    build_tree takes rank paths and numbers nodes by (depth, path); we give each node
    its parent's path plus its rank among its siblings, then renumber every field back
    into the caller's order (which only has parents before children).
    """
    paths, n_children = [()], [0] * len(parents)
    for p in parents[1:]:
        paths.append(paths[p] + (n_children[p],))
        n_children[p] += 1
    tree = build_tree([list(q) for q in paths[1:]])
    index = {(): 0} | {tuple(q): i + 1 for i, q in enumerate(tree.paths_list)}
    perm = torch.tensor([index[q] for q in paths])   # (N,) our node n is the project's perm[n]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))              # the project's node b is our inv[b]
    leaves, order = inv[tree.leaves].sort()
    return replace(tree,
                   paths_list=[tree.paths_list[b - 1] for b in perm[1:].tolist()],
                   depth=tree.depth[perm], rank=tree.rank[perm],
                   parent=torch.tensor(list(parents)),
                   mask=tree.mask[perm][:, perm],
                   leaves=leaves,
                   paths=torch.where(tree.paths >= 0, inv[tree.paths.clamp(min=0)], -1)[order])


def tree_attention_mask(parents):
    return as_tree(parents).mask


def pseudo_attention_mask(tree_mask, k):
    # parents come first, so a node's parent is its ancestor with the highest index
    parents = [-1] + [int(tree_mask[n, :n].nonzero().max()) for n in range(1, tree_mask.shape[0])]
    return pseudo_mask(as_tree(parents), k)


def greedy_verify(parents, tokens, next_ids):
    return greedy_accept(as_tree(parents), tokens, next_ids).tolist()


def transfer_training_mask(T, k):
    return training_mask(T, k)


class _OneNode:
    """decode.verify's sampler interface for a tree of one root and its children.

    verify reads a node's distribution as sampler.probs(logits[node]); we hand it the
    node indices as "logits": the root's distribution is p, and an accepted child ends
    the walk (it has no children) with no next token to sample, as in the exercise.
    """

    greedy = False

    def __init__(self, p, uniform, sample):
        self.p, self.uniform, self.sample_fn = p, uniform, sample

    def probs(self, node):
        return self.p.clone() if int(node) == 0 else None  # clone: verify edits the residual in place

    def sample(self, residual):
        return None if residual is None else self.sample_fn(residual)


@lru_cache
def star(n_children):
    """The root and n children: node c+1 is candidate c, in order. Trees are immutable: build each once."""
    return build_tree([[c] for c in range(n_children)])


def rejection_sample(p, candidates, uniform, sample):
    tree = star(len(candidates))
    tokens = torch.tensor([-1] + list(candidates))             # the root's token is not used
    path, token = verify(tree, tokens, torch.arange(tree.n_nodes)[:, None], _OneNode(p, uniform, sample))
    return (None, token) if len(path) == 1 else (path[1] - 1, int(tokens[path[1]]))


def compact_cache(k_cache, v_cache, length, keep):
    cache = KVCache.__new__(KVCache)  # wrap the caller's tensors; __init__ would allocate new ones
    cache.k, cache.v, cache.max_len = k_cache, v_cache, k_cache.shape[3]
    cache.length, cache.pending = length, 0
    cache.commit(keep)
    return cache.length
