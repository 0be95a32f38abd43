"""tree.py: node order, tree masks and the pseudo-token layout entry by entry, validation,
presets, dynamic trees, greedy acceptance, and trees on the device of their inputs."""
import itertools
import math

import pytest
import torch

from transfer import training_mask, training_positions
from tree import (PRESETS, build_tree, candidates, chain, clip, dynamic_tree, format_mask, format_tree,
                  greedy_accept, parse_tree, pseudo_layout, pseudo_mask, pseudo_positions, validate)

# Nodes after sorting: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [0,1], 5 [1,0]
PATHS = [[0], [1], [0, 0], [0, 1], [1, 0]]


def grid(rows):
    return torch.tensor([[c == "1" for c in r.replace(" ", "")] for r in rows])


@pytest.fixture
def tree():
    # shuffled on purpose: node order must not depend on input order
    return build_tree([[1, 0], [0, 1], [1], [0, 0], [0]])


def test_structure(tree):
    assert tree.rank_paths == PATHS
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2]
    assert tree.rank.tolist() == [0, 0, 1, 0, 1, 0]
    assert tree.parent.tolist() == [-1, 0, 0, 1, 1, 2]
    assert (tree.n_nodes, tree.max_depth, tree.width) == (6, 2, 2)
    assert (build_tree([]).n_nodes, build_tree([]).max_depth, build_tree([]).width) == (1, 0, 1)
    assert tree.children(1).tolist() == [3, 4]
    assert tree.path_to(5).tolist() == [0, 2, 5]


def test_tree_mask(tree):
    expected = grid([
        "100000",
        "110000",
        "101000",
        "110100",
        "110010",
        "101001",
    ])
    assert torch.equal(tree.mask, expected)


def test_pseudo_mask_k2(tree):
    #        tree   | pseudo: node0 node1 node2 node3 node4 node5
    expected = grid([
        "100000 00 00 00 00 00 00",
        "110000 00 00 00 00 00 00",
        "101000 00 00 00 00 00 00",
        "110100 00 00 00 00 00 00",
        "110010 00 00 00 00 00 00",
        "101001 00 00 00 00 00 00",
        "100000 10 00 00 00 00 00",  # node 0, pseudo 1
        "100000 11 00 00 00 00 00",  # node 0, pseudo 2
        "110000 00 10 00 00 00 00",
        "110000 00 11 00 00 00 00",
        "101000 00 00 10 00 00 00",
        "101000 00 00 11 00 00 00",
        "110100 00 00 00 10 00 00",
        "110100 00 00 00 11 00 00",
        "110010 00 00 00 00 10 00",
        "110010 00 00 00 00 11 00",
        "101001 00 00 00 00 00 10",
        "101001 00 00 00 00 00 11",  # node 5, pseudo 2
    ])
    assert torch.equal(pseudo_mask(tree, 2), expected)
    assert pseudo_positions(tree, 2).tolist() == [0, 1, 1, 2, 2, 2,
                                                   1, 2, 2, 3, 2, 3, 3, 4, 3, 4, 3, 4]


def test_pseudo_mask_k0_is_tree_mask(tree):
    assert torch.equal(pseudo_mask(tree, 0), tree.mask)
    assert torch.equal(pseudo_positions(tree, 0), tree.depth)


@pytest.mark.parametrize("name,k", [("small", 3), ("medium", 4), ("wide", 2), ("chain", 1)])
def test_pseudo_layout_brute_force(name, k):
    # pins the rule of docs/method.md, rebuilt entry by entry from the parent list: nodes see their
    # ancestors and themselves and never a pseudo token; pseudo i of node n sees n's path and pseudo
    # 1..i of n (not the other nodes of the tree); its position is depth(n) + i
    t = build_tree(parse_tree(name, k))
    N, parent = t.n_nodes, t.parent.tolist()

    def path(n):
        return {n} | (path(parent[n]) if n else set())

    def who(a):  # index -> (node, i), i = 0 for the node itself
        return (a, 0) if a < N else ((a - N) // k, (a - N) % k + 1)

    mask, pos = pseudo_layout(t.mask, t.depth, k)
    assert mask.shape == (N + N * k, N + N * k)
    for a in range(N + N * k):
        na, ia = who(a)
        assert pos[a] == t.depth[na] + ia
        for b in range(N + N * k):
            nb, ib = who(b)
            want = nb in path(na) if ib == 0 else (nb == na and 1 <= ib <= ia)
            assert bool(mask[a, b]) == want, (a, b)


@pytest.mark.parametrize("name,k,spawn", [("small", 3, [0, 2, 5]), ("medium", 2, [4]), ("wide", 4, [0])])
def test_pseudo_layout_spawn_is_the_full_layout_cut_down(name, k, spawn):
    # pins pseudo tokens on some nodes only: the layout is the full one with the other nodes'
    # pseudo groups cut out, rows and columns, entry by entry and position by position
    t = build_tree(parse_tree(name, k))
    N = t.n_nodes
    full_mask, full_pos = pseudo_layout(t.mask, t.depth, k)
    mask, pos = pseudo_layout(t.mask, t.depth, k, torch.tensor(spawn))
    keep = list(range(N)) + [N + n * k + i for n in spawn for i in range(k)]
    assert mask.shape == (len(keep), len(keep))
    assert torch.equal(mask, full_mask[keep][:, keep])
    assert torch.equal(pos, full_pos[keep])


@pytest.mark.parametrize("T,k", [(1, 1), (5, 3), (8, 4)])
def test_a_chain_pseudo_layout_is_the_training_layout(T, k):
    # pins one construction for training and decoding: a text of T tokens is a chain tree of T nodes
    # (the root and T-1 top-1 paths), and its pseudo layout is the training mask and positions
    t = build_tree(chain(T - 1))
    assert torch.equal(training_mask(T, k), pseudo_mask(t, k))
    assert torch.equal(training_positions(T, k), pseudo_positions(t, k))


def test_parents_before_children():
    for name in PRESETS:
        t = build_tree(clip(PRESETS[name], 4))
        assert (t.parent[1:] < torch.arange(1, t.n_nodes)).all()
        assert (t.depth[1:] == t.depth[t.parent[1:]] + 1).all()
        assert (t.depth.diff() >= 0).all()
        for n, p in enumerate(t.rank_paths, start=1):
            parent = t.parent[n]
            assert (t.rank_paths[parent - 1] if parent > 0 else []) == p[:-1]


@pytest.mark.parametrize("paths, match", [
    ([[0], [0, 1, 0]], r"\[0, 1, 0\] has no parent \[0, 1\]"),
    ([[0], [1], [0]], r"\[0\] appears twice"),
    ([[0], [-1]], r"non-negative ints, got -1"),
    ([[0], [0.0]], r"non-negative ints, got 0.0"),
    ([[0], [True]], r"non-negative ints, got True"),
    ([[0], []], r"root is implicit"),
    ([[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]], r"depth 4 > k=3.*clip\(paths, 3\)"),
])
def test_validate_errors(paths, match):
    with pytest.raises(ValueError, match=match):
        validate(paths, k=3)


def test_parse_tree():
    assert parse_tree("[[0],[0,0],[1]]", k=3) == [[0], [0, 0], [1]]
    assert parse_tree("chain", k=3) == [[0], [0, 0], [0, 0, 0]]
    assert parse_tree("chain", k=5) == [[0] * d for d in range(1, 6)]
    assert parse_tree("root", k=3) == []
    with pytest.raises(ValueError, match=r"could not parse"):
        parse_tree("[[0],[0,", k=3)
    with pytest.raises(ValueError, match=r"unknown tree 'bushy'.*'medium'"):
        parse_tree("bushy", k=3)
    with pytest.raises(ValueError, match=r"list of rank paths"):
        parse_tree("[0, 1]", k=3)
    with pytest.raises(ValueError, match=r"has no parent"):
        parse_tree("[[0,0]]", k=3)
    with pytest.raises(ValueError, match=r"depth 2 > k=1"):
        parse_tree("[[0],[0,0]]", k=1)
    # full-W1xW2...: every path with rank < W_d at depth d, level by level (parents first, ranks in order)
    assert parse_tree("full-3x2", k=2) == [[0], [1], [2], [0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]
    assert parse_tree("full-1x1x1", k=4) == parse_tree("chain", k=3)
    assert len(parse_tree("full-32x16x4", k=4)) == 32 + 32 * 16 + 32 * 16 * 4
    small = parse_tree("small", k=4)
    assert all(p in parse_tree("full-3x2x2x1", k=4) for p in small)
    for bad in ("full-", "full-3x0", "full-ax2", "full-2x-1"):
        with pytest.raises(ValueError, match=r"write full-W1xW2x\.\.\. with widths >= 1"):
            parse_tree(bad, k=3)
    with pytest.raises(ValueError, match=r"3 widths for k=2 draft positions; give at most 2"):
        parse_tree("full-2x2x2", k=2)


@pytest.mark.parametrize("k", [3, 4])
def test_presets(k):
    for name in PRESETS:
        paths = parse_tree(name, k)
        validate(paths, k)
        t = build_tree(paths)
        assert t.max_depth <= k
        if paths:  # the top-rank path is the longest
            assert [0] * t.max_depth in paths
    assert 8 <= len(parse_tree("small", 4)) + 1 <= 10
    assert 20 <= len(parse_tree("medium", 4)) + 1 <= 30
    assert 55 <= len(parse_tree("wide", 4)) + 1 <= 65
    assert build_tree([]).n_nodes == 1


def test_candidates(tree):
    draft_ids = torch.tensor([[20, 21, 22], [30, 31, 32], [40, 41, 42]])  # (k=3, s=3)
    assert candidates(tree, 10, draft_ids).tolist() == [10, 20, 21, 30, 31, 30]
    assert candidates(build_tree([]), 10, draft_ids[:0]).tolist() == [10]
    with pytest.raises(ValueError, match=r"shape >= \(2, 2\)"):
        candidates(tree, 10, draft_ids[:1])


def test_greedy_accept(tree):
    tokens = torch.tensor([10, 20, 21, 30, 31, 30])
    nxt = lambda d: torch.tensor([d.get(n, 99) for n in range(6)])
    assert greedy_accept(tree, tokens, nxt({})).tolist() == [0]
    assert greedy_accept(tree, tokens, nxt({0: 21, 2: 30})).tolist() == [0, 2, 5]
    assert greedy_accept(tree, tokens, nxt({0: 20, 1: 31})).tolist() == [0, 1, 4]
    # node 3 matches its parent's argmax, but node 1 itself was rejected
    assert greedy_accept(tree, tokens, nxt({0: 21, 1: 30})).tolist() == [0, 2]


def test_greedy_accept_prefers_longer_then_first():
    t = build_tree(PATHS)
    tokens = torch.tensor([10, 20, 20, 30, 31, 30])  # nodes 1 and 2 share a token
    nxt = lambda d: torch.tensor([d.get(n, 99) for n in range(6)])
    # both depth-1 nodes accepted, only the later branch goes deeper
    assert greedy_accept(t, tokens, nxt({0: 20, 2: 30})).tolist() == [0, 2, 5]
    # equal length: the first in node order wins
    assert greedy_accept(t, tokens, nxt({0: 20})).tolist() == [0, 1]


def test_dynamic_tree_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.4], [0.9, 0.05]])
    # scores: [0] .9, [0,0] .45, [0,0,0] .405, [0,1] .36, [0,1,0] .324, [1] .1
    assert dynamic_tree(probs, 4) == [[0], [0, 0], [0, 0, 0], [0, 1]]
    assert dynamic_tree(probs, 3, max_depth=2) == [[0], [0, 0], [0, 1]]
    assert dynamic_tree(probs, 100, max_depth=1) == [[0], [1]]


def test_dynamic_tree_is_top_n():
    g = torch.Generator().manual_seed(0)
    k, s = 3, 4
    probs = torch.softmax(torch.randn(k, 50, generator=g) * 2, dim=-1).topk(s).values  # (k, s)
    p = probs.tolist()
    all_paths = [list(r) for d in range(1, k + 1) for r in itertools.product(range(s), repeat=d)]
    score = {tuple(q): math.prod(p[i][r] for i, r in enumerate(q)) for q in all_paths}
    for n in [1, 5, 17, 40, len(all_paths)]:
        got = dynamic_tree(probs, n)
        assert len(got) == n
        validate(got, k)  # prefix-closed, no duplicates
        best = sorted(score.values(), reverse=True)[:n]
        assert sorted((score[tuple(q)] for q in got), reverse=True) == pytest.approx(best, rel=1e-12)
        # with a random tie-free case, the chosen set is unique
        assert {tuple(q) for q in got} == set(sorted(score, key=lambda q: -score[q])[:n])


def test_format(tree):
    tokens = torch.tensor([10, 20, 21, 30, 31, 30])
    assert format_tree(tree, tokens) == "\n".join([
        "0 root  10",
        "├── 1 d1 r0  20",
        "│   ├── 3 d2 r0  30",
        "│   └── 4 d2 r1  31",
        "└── 2 d1 r1  21",
        "    └── 5 d2 r0  30",
    ])
    text = format_tree(tree, tokens, decode=lambda ids: f"<{ids[0]}>")
    assert text.splitlines()[0] == "0 root  '<10>'"
    assert format_mask(torch.tensor([[True, False], [True, True]])) == "  0 1\n0 ■ ·\n1 ■ ■"


def test_to_device(tree):
    t = tree.to("meta")
    assert all(x.device.type == "meta" for x in (t.depth, t.rank, t.parent, t.mask))
    assert t.rank_paths == tree.rank_paths and (t.n_nodes, t.max_depth, t.width) == (6, 2, 2)
    assert tree.mask.device.type == "cpu"  # frozen: the original is untouched


def test_device_work_follows_the_inputs(tree):
    # pins that candidates, the pseudo layout and greedy acceptance work on the device of their
    # inputs (a tree left on the CPU beside GPU tensors broke decoding on CUDA and MPS); the meta
    # device stands in for a GPU: mixing it with the CPU raises as a GPU would
    t = tree.to("meta")
    tokens = candidates(t, 10, torch.zeros(3, 3, dtype=torch.long, device="meta"))
    mask, pos = pseudo_layout(t.mask, t.depth, 2)
    assert tokens.device.type == mask.device.type == pos.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta tensors"):  # the only host read: the accepted path
        greedy_accept(t, tokens, tokens)
    with pytest.raises(RuntimeError, match="device"):  # what the old decoding loop did
        greedy_accept(tree, tokens, tokens)
