"""Reference solutions: thin adapters around the project's own code.

The exercises take plain inputs (a parent list, a mask, raw cache tensors); the
project works on tree.Tree objects, a sampler and a KVCache. Each function below
converts, calls the project's function, and converts back, so that grading this
file with the autograder also checks tree.py, transfer.py, decode.py and model.py.

    HT_SOLUTION=reference python -m pytest -q test_autograder.py

Answers to the "Think" questions in exercises.py, for teachers:
1. Node 3 continues node 1's text, not node 2's: nodes 1 and 2 are alternatives for the same
   position. Seeing both, node 3 would be scored on a text with two tokens at one position,
   which is nobody's text, and its logits would not be plain decoding's.
2. The nodes x pseudo block: tree nodes never see pseudo tokens. If they did, the pseudo
   states (whatever the maps make of them) would change the nodes' logits, and greedy
   output would no longer equal plain decoding's.
3. Because its parent, node 1, was rejected: the text before node 3 is not the text the
   model wrote, so "its parent's argmax" is the argmax after a token plain decoding never
   emitted.
4. It would learn to read the answer off real token j+1 (copy it) instead of predicting
   it. When decoding, token j+1 is not known when the drafts are made, the copy has
   nothing to read, and the drafts collapse: decoding stays lossless but tau drops.
5. 0.5 (accepted) + 0.5 x 0.5 (rejected, then drawn again from p) = 0.75 instead of 0.5.
6. A wrong entry means the next pass attends to a text that is not the accepted one (a
   token missing, duplicated or moved): its logits, and so the output, change silently.
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
    index = {(): 0} | {tuple(q): i + 1 for i, q in enumerate(tree.rank_paths)}
    perm = torch.tensor([index[q] for q in paths])   # (N,) our node n is the project's perm[n]
    return replace(tree,
                   rank_paths=[tree.rank_paths[b - 1] for b in perm[1:].tolist()],
                   depth=tree.depth[perm], rank=tree.rank[perm],
                   parent=torch.tensor(list(parents)),
                   mask=tree.mask[perm][:, perm])


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
