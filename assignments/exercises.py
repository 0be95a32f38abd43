"""Hidden Transfer, the key pieces: six exercises.

Replace each `raise NotImplementedError(...)` with your code, then grade yourself:

    cd assignments && python -m pytest -q test_autograder.py

Each function is 5 to 20 lines and needs nothing but torch. The docstrings are the
contract the autograder checks. The project's own tree.py, transfer.py, decode.py and
model.py hold working versions of all six: try without them first, then compare.
"""
import torch


def tree_attention_mask(parents):
    """Exercise 1: the tree-attention mask.

    parents: a list of N ints, the parent of each node of a candidate tree. Node 0 is
    the root (parents[0] == -1) and every parent comes before its children
    (0 <= parents[n] < n for n >= 1).
    Returns an (N, N) torch.bool tensor M: M[a, b] is True iff node a may attend to
    node b, that is iff b is a itself or one of a's ancestors.

    Example: parents = [-1, 0, 0, 1]  (1 and 2 are children of the root, 3 is 1's child)

        columns:  0  1  2  3
        row 0:    T  .  .  .     the root sees itself
        row 1:    T  T  .  .
        row 2:    T  .  T  .
        row 3:    T  T  .  T     node 3 sees its ancestors 0 and 1 and itself, not 2

    Why: every root-to-node path of the tree is one candidate continuation. With this
    mask one forward pass scores all of them at once, each as if it were the only one.

    Think: nodes 1 and 2 sit at the same position and are in the same pass. Why must
    node 3 see node 1 but not node 2, and what would go wrong if it saw both?
    """
    raise NotImplementedError(
        "TODO: fill the mask one row at a time. Parents come before their children: what has "
        "the row of node n's parent already worked out for you when you reach node n?")


def pseudo_attention_mask(tree_mask, k):
    """Exercise 2: the tree mask extended with hidden transfer's pseudo tokens.

    tree_mask: (N, N) bool, exercise 1's mask of a tree of N nodes. k >= 0: pseudo
    tokens per node. In the decoding pass every tree node n spawns k pseudo tokens;
    pseudo token i (i = 1..k) of node n sits at index N + n*k + (i-1).
    Returns the (N + N*k, N + N*k) bool mask over [N tree nodes ; N*k pseudo tokens]:
      - tree node a sees exactly what tree_mask[a] says, and no pseudo token (the
        model's own computation must not change);
      - pseudo i of node n sees what n sees (n's ancestors and n itself), plus
        pseudo 1..i of n (the earlier pseudo tokens of its own node, and itself).

    Example: parents [-1, 0] (N = 2), k = 2. Index 0 root, 1 node 1,
    2-3 the root's pseudo 1-2, 4-5 node 1's pseudo 1-2:

        columns:  0  1  2  3  4  5
        row 0:    T  .  .  .  .  .
        row 1:    T  T  .  .  .  .
        row 2:    T  .  T  .  .  .     root's pseudo 1: the root, itself
        row 3:    T  .  T  T  .  .     root's pseudo 2: the root, root's pseudo 1, itself
        row 4:    T  T  .  .  T  .     node 1's pseudo 1: nodes 0 and 1, itself
        row 5:    T  T  .  .  T  T

    Think: one of the four blocks of this mask ([nodes ; pseudo] x [nodes ; pseudo]) stays
    all False. Which one, and why would the output stop being lossless if it did not?
    """
    raise NotImplementedError(
        "TODO: fill the mask block by block: nodes x nodes, nodes x pseudo, pseudo x nodes, "
        "pseudo x pseudo. For each block, ask which rows of which mask it repeats, if any.")


def greedy_verify(parents, tokens, next_ids):
    """Exercise 3: greedy verification, the longest accepted path.

    parents: as in exercise 1 (N nodes, root 0). tokens: (N,) long tensor, each node's
    candidate token (tokens[0] is the root's, already decided). next_ids: (N,) long
    tensor, the model's argmax at each node: its greedy choice for the token that
    follows that node's path.
    The root is always accepted. A node n >= 1 is accepted when its parent is accepted
    and tokens[n] == next_ids[parents[n]].
    Returns the longest accepted path as a list of node indices, root first:
    [0, ..., a]. Among equally deep accepted nodes, a is the one with the lowest index.

    Example: parents [-1, 0, 0, 1, 2], tokens [5, 7, 8, 9, 3], next_ids [8, 9, 3, 1, 1]
        the root's argmax is 8: node 2 (token 8) is accepted, node 1 (token 7) is not;
        node 2's argmax is 3: node 4 (token 3) is accepted          -> [0, 2, 4]
        (node 3's token 9 is node 1's argmax, but node 1 was rejected, so 3 is not reached)

    Think: node 3's token does equal its parent's argmax. Why would emitting it still give
    a text that plain greedy decoding never writes?
    """
    raise NotImplementedError(
        "TODO: decide for every node whether it is accepted (its own test, and its parent's "
        "fate), then find the deepest one and the path that leads to it.")


def transfer_training_mask(T, k):
    """Exercise 4: the attention mask for training the transfer maps.

    A training sequence has T real tokens, and every position j makes k pseudo tokens
    (j, 1..k); pseudo (j, i) stands in for the unknown hidden state at position j+i
    and sits at index T + j*k + (i-1).
    Returns the (T + T*k, T + T*k) bool mask over [T real ; T*k pseudo]:
      - real j sees real 0..j (causal) and no pseudo token;
      - pseudo (j, i) sees real 0..j and pseudo (j, 1..i) of its own position, nothing else.

    Example: T = 2, k = 2. Index 0-1 real, 2-3 pseudo (0, 1..2), 4-5 pseudo (1, 1..2):

        columns:  0  1  2  3  4  5
        row 0:    T  .  .  .  .  .
        row 1:    T  T  .  .  .  .
        row 2:    T  .  T  .  .  .     pseudo (0, 1) sees real 0 and itself
        row 3:    T  .  T  T  .  .
        row 4:    T  T  .  .  T  .     pseudo (1, 1) sees real 0, 1 and itself
        row 5:    T  T  .  .  T  T

    Compare with exercise 2: a sequence is a chain-shaped tree, and the two masks agree.

    Think: in this one training pass the real token j+1 is right there. What would a
    drafter learn if pseudo (j, 1) could see it, and what would happen when decoding, where
    token j+1 is not known yet?
    """
    raise NotImplementedError(
        "TODO: split the mask into its real and pseudo blocks as in exercise 2; here the "
        "'tree' is a chain, so each block has a simple shape.")


def rejection_sample(p, candidates, uniform, sample):
    """Exercise 5: the lossless sampling rule at one accepted node.

    p: (V,) float tensor, the model's (warped) next-token distribution at this node.
    candidates: list of distinct token ids, the node's children in the order to try.
    uniform: callable () -> float, a fresh uniform draw in [0, 1) on every call.
    sample: callable (probs: (V,) tensor) -> int, draws a token from probs.
    Returns (c, token): c is the index into candidates of the accepted child and token
    its token, or c is None when every child was rejected and token = sample(residual).

    The rule (recursive rejection over deterministic candidates, as in decode.verify):
        r = a copy of p                     (do not modify p)
        for c, tok in enumerate(candidates):
            u = uniform()
            if u < r[tok]: return (c, tok)  (strictly less: a token with r = 0 is never accepted)
            r[tok] = 0; r = r / r.sum()     (rejected: rule tok out, renormalise the rest)
        return (None, sample(r))
    Call uniform() exactly once per child tried, and sample() once, only when every child
    was rejected: the autograder replays scripted draws.

    Example: p = [0.1, 0.2, 0.3, 0.4], candidates [3, 1]
        u = 0.5: 0.5 < r[3] = 0.4? no   -> r = [1/6, 1/3, 1/2, 0]
        u = 0.3: 0.3 < r[1] = 1/3? yes  -> return (1, 1)
        (with u = 0.5 then 0.9: both rejected, r = [0.25, 0, 0.75, 0], return (None, sample(r)))
    Why it is exact: the first child is emitted with probability p[tok]; otherwise we are
    sampling from p conditioned on "not tok", which is r, and the same argument repeats.
    So the token has exactly the distribution p, whatever the candidates are.

    Think: a "simpler" rule samples the fallback from p instead of r. With p = [0.5, 0.5]
    and one candidate, token 0, how often would it emit token 0?
    """
    raise NotImplementedError(
        "TODO: turn the rule in the docstring into code; mind that p itself must not change.")


def compact_cache(k_cache, v_cache, length, keep):
    """Exercise 6: KV-cache compaction after verification.

    k_cache, v_cache: (layers, B, heads, slots, head_dim) tensors, laid out like
    model.KVCache.k and .v. Slots [0, length) hold the committed tokens. The last
    forward pass wrote its new tokens (the tree nodes) after them: new token j is at
    slot length + j.
    keep: list (or 1-D long tensor) of distinct indices into those new tokens, e.g.
    the accepted path [0, 2, 5].
    In place, in both tensors, for every layer, batch row and head: put the entry of
    new token keep[i] at slot length + i. Return the new length, length + len(keep).
    Slots [0, length) must not change; slots from the new length on may hold anything.

    Example: length 3, keep [0, 2, 3]: slot 3 <- slot 3, slot 4 <- slot 5,
    slot 5 <- slot 6; return 6.
    keep may be in any order, and sources overlap destinations: with keep = [2, 0],
    slot length gets new token 2 and slot length + 1 new token 0 — a loop that copies
    one slot at a time overwrites new token 0 before reading it.

    Think: after this, the next forward pass attends to slots [0, new length) as the text
    so far. What would it compute if one kept entry landed in the wrong slot?
    """
    raise NotImplementedError(
        "TODO: move every kept entry, for all layers, batch rows and heads at once; read all "
        "the sources before you write any destination.")
