"""The paper's analyses of hidden transfer, on held-out text.

    python analyze.py --data data/shakespeare-greedy                    # (a) and (b)
    python analyze.py --data data/shakespeare-greedy --upper-blocks     # and (d)
    python analyze.py --data data/shakespeare-greedy --sweep-steps 120  # and (c): minutes per layer
    python analyze.py --data self --upper-blocks                        # no corpus: the model's own text
    python analyze.py --data data/shakespeare-greedy --taus small,full-4x4x4x4  # and (e)

(a) top-1 / top-5 accuracy of each future position i = 1..k (against the base
    model's own argmax, which is what greedy verification accepts);
(b) cosine similarity between the pseudo hidden state of position j+i and the
    true hidden state of that position, after every block from t to L;
(c) top-1 accuracy by transfer layer t (a drafter trained for each t);
(d) do the upper blocks matter? The same maps, their drafts read after blocks t+1..L
    (hidden transfer) and straight off layer t (the LM head on W_i h^t): accuracy by
    position and tau, on the model's greedy continuations of held-out prompts;
(e) how far a tree alone could take tau: greedy tree decoding replayed with these drafts
    and the trees of --taus (full-W1xW2x...: every top-W_d rank at depth d), for either
    drafter kind; with --versus, a second drafter too and the ratio of their taus, with a
    95% bootstrap interval. With --prompts, (d) and (e) replay the model's greedy answers to
    chat requests instead, as decoding a chat writes them.
Blocks are numbered 1..L, as in the paper. --data self: no corpus needed, the text is the
model's greedy continuations of prompts it samples itself. Tables are printed; PNG plots
are written to --out when matplotlib is installed.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

from model import Tokenizer, Transformer
from train import (answer_requests, continue_batch, get_batch, load_tokens, pick_device, read_requests,
                   sample_sequences)
from transfer import drafts_for_text, load_drafter, pseudo_hidden, restrict_vocab
from tree import build_tree, parse_tree


def held_out_batches(data_dir, n_batches, batch_size, seq_len, seed=0, tok=None):
    data = load_tokens(os.path.join(data_dir, "val.bin"), tok)  # tok: refuse another tokenizer's ids
    return [get_batch(data, batch_size, seq_len, seed, s)[0] for s in range(n_batches)]


def greedy_batches(model, prompts, seq_len):
    """The model's greedy continuation of each batch of prompts (B, P) to seq_len tokens:
    the text greedy decoding emits after them, which simulated_tau replays."""
    return [continue_batch(model, p, seq_len - p.shape[1]) for p in prompts]


def chat_answers(model, tok, requests, answer_len):
    """The model's greedy answers to chat requests, each in its chat template: -> texts [(1, P_i + n_i)]
    and prompt lengths [P_i]; an answer stops at its end of turn, as decoding's does."""
    prompts, answers = answer_requests(model, tok, requests, answer_len)
    return ([torch.tensor([p + a], device=model.device) for p, a in zip(prompts, answers)],
            [len(p) for p in prompts])


def self_batches(model, bos_id, n_batches, batch_size, seq_len, prompt_len=32, seed=0):
    """Text for a model without a corpus: prompt_len tokens it samples from BOS (temperature 1),
    each continued greedily to seq_len, as `train.py greedy-data` continues corpus prompts."""
    prompts = [sample_sequences(model, batch_size, prompt_len, bos_id, seed * 1000 + s) for s in range(n_batches)]
    return greedy_batches(model, prompts, seq_len)


def direct_drafts(model, drafter, tokens):
    """Drafts straight off the maps, without blocks t+1..L: the LM head, after the final norm,
    on W_i h_j^t. Same shapes as transfer.drafts_for_text: (B, T) tokens -> the real tokens'
    final hidden states (B, T, d) and draft logits (B, T, k, V), differentiable in the maps."""
    if drafter.kind != "hidden-transfer":
        raise ValueError(f"direct drafts read a hidden-transfer drafter's maps; this is a {drafter.kind} drafter")
    with torch.no_grad():  # the base model is frozen
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        hs = model.run_blocks(model.embed(tokens), pos, return_all=True)  # L x (B, T, d)
    return hs[-1], model.logits(drafter(hs[drafter.layer - 1]))          # hs[t - 1]: after block t


@torch.no_grad()
def position_accuracy(model, drafter, batches, topk=(1, 5), drafts=drafts_for_text, starts=None):
    """{k: [accuracy of position i for i = 1..k]}: does D_i's top-k hold the base model's token?
    starts: for each batch, the first position whose drafts count (None: every position). A chat
    and its answer: the prompt's last token, whose pass drafts the answer, so that only what
    decoding drafts is scored, not the prompt's own tokens (a fixed system prompt is easy)."""
    hits = {n: torch.zeros(drafter.k) for n in topk}
    count = torch.zeros(drafter.k)
    for b, x in enumerate(batches):
        real, draft = drafts(model, drafter, x)                   # (B, T, d), (B, T, k, V)
        target = model.logits(real).argmax(-1)                    # (B, T) the base model's own next token
        T, j0 = x.shape[1], 0 if starts is None else starts[b]
        for i in range(1, drafter.k + 1):
            top = draft[:, j0: T - i, i - 1].topk(max(topk), -1).indices  # (B, T-i-j0, maxk) drafts at j >= j0
            tgt = target[:, j0 + i:, None]                         # (B, T-i-j0, 1) the token at j+i+1
            for n in topk:
                hits[n][i - 1] += (top[..., :n] == tgt).any(-1).sum()
            count[i - 1] += tgt.numel()
    return {n: (hits[n] / count.clamp(min=1)).tolist() for n in topk}


@torch.no_grad()
def simulated_tau(model, drafter, texts, prompt_len, trees=("chain", "small"), drafts=drafts_for_text):
    """Greedy tree decoding replayed offline -> {tree: (tau, [tokens emitted by each step] per sequence)}.

    texts: batches (B, T) whose tokens from prompt_len on are the model's greedy continuation
    of the tokens before (greedy_batches); prompt_len: one for all, or a list, one per batch
    (chat_answers). Decoding is lossless, so it emits exactly that
    text; a step whose last accepted token sits at position j drafts from j's pseudo tokens,
    which see the tokens <= j and nothing else: the drafts that drafts() computes at j. The
    step accepts the deepest tree path that spells the text's next tokens and adds the
    model's own next one. So the replay takes the steps decode.generate_tree takes (notebook
    02 checks it), for any drafts, including ones no decoding loop implements.
    """
    built = {name: build_tree(parse_tree(name, drafter.k)) for name in trees}
    steps = {name: [] for name in trees}
    for x, prompt_len in zip(texts, prompt_len if isinstance(prompt_len, list) else [prompt_len] * len(texts)):
        real, logits = drafts(model, drafter, x)                            # (B, T, d), (B, T, k, V)
        greedy = model.logits(real).argmax(-1)[:, prompt_len - 1:-1]       # the model's next token
        if (greedy != x[:, prompt_len:]).float().mean() > 0.01:           # (a near-tie may differ)
            raise ValueError("simulated_tau needs the model's greedy continuations of the first "
                             "prompt_len tokens (analyze.greedy_batches), not other text")
        T, text = x.shape[1], x.tolist()
        for name, tree in built.items():
            depth, parent = tree.depth.tolist(), tree.parent.tolist()
            # the token of every node but the root at every position j: rank r of D_depth
            nodes = logits.topk(tree.width, -1).indices[:, :, tree.depth[1:] - 1, tree.rank[1:]].tolist()
            for b in range(x.shape[0]):
                j, emitted = prompt_len - 1, []                  # j: the last accepted token
                while j + 2 + tree.max_depth < T:                # the text holds every token the step can emit
                    ok = [True]                                  # node n sits at position j + 1 + depth[n]
                    for n in range(1, tree.n_nodes):             # parents come first
                        ok.append(ok[parent[n]] and nodes[b][j][n - 1] == text[b][j + 1 + depth[n]])
                    n_acc = max(d for d, o in zip(depth, ok) if o)
                    emitted.append(n_acc + 1)                    # the accepted drafts + the model's own token
                    j += n_acc + 1
                steps[name].append(emitted)
    return {name: (sum(map(sum, s)) / sum(map(len, s)), s) for name, s in steps.items()}


@torch.no_grad()
def cosine_by_layer(model, drafter, batches):
    """rows: block t (the transfer output) .. L; columns: position i = 1..k.
    Mean cosine similarity between pseudo (j, i) and the real hidden state of position j+i."""
    t, k, L = drafter.layer, drafter.k, model.args.n_layers
    sums = torch.zeros(L - t + 1, k)
    count = torch.zeros(k)
    for x in batches:
        T = x.shape[1]
        pos = torch.arange(T)
        real = model.run_blocks(model.embed(x), pos, return_all=True)  # L x (B, T, d)
        pseudo_t = drafter(real[t - 1])                                 # (B, T, k, d) right after the transfer
        _, pseudo = pseudo_hidden(model, drafter, x)                    # L-t x (B, T, k, d)
        for row, (p, r) in enumerate(zip([pseudo_t] + pseudo, real[t - 1:])):
            for i in range(1, k + 1):
                sums[row, i - 1] += F.cosine_similarity(p[:, : T - i, i - 1], r[:, i:], dim=-1).sum()
        count += torch.tensor([x.shape[0] * (T - i) for i in range(1, k + 1)], dtype=torch.float)
    return (sums / count).tolist()


def layer_sweep(a, model):
    """Train a drafter at every transfer layer t with the same budget; top-1 by position for each."""
    from train import main as train_main
    results = {}
    for t in range(1, model.args.n_layers):
        out = os.path.join(a.out, f"sweep_t{t}_k{a.k}.safetensors")
        if not os.path.exists(out):
            train_main(["drafter", "--checkpoint", a.checkpoint, "--layer", str(t), "--k", str(a.k),
                        "--steps", str(a.sweep_steps), "--data", a.data, "--out", out, "--quiet",
                        "--eval-every", str(a.sweep_steps)])
        drafter = load_drafter(out, model)
        results[t] = position_accuracy(model, drafter, a.batches, topk=(1,))[1]
    return results


def table(title, header, rows):
    print(f"\n{title}\n| {' | '.join(header)} |\n|{'---|' * len(header)}")
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")


def greedy_texts(a, model):
    """The text (d) and (e) replay decoding on: the model's greedy answers to --prompts, or its greedy
    continuations of held-out prompts -> (texts, prompt lengths, what they are)."""
    if a.prompts:
        texts, P = chat_answers(model, Tokenizer(a.checkpoint), read_requests(a.prompts), a.answer_len)
        return texts, P, f"greedy answers of up to {a.answer_len} tokens to the {len(texts)} requests of {a.prompts}"
    P = a.prompt_len
    texts = a.batches if a.data == "self" else greedy_batches(model, [x[:, :P] for x in a.batches], a.seq_len)
    return texts, P, f"the model's greedy continuations of {P}-token prompts ({a.data})"


def upper_blocks(a, model, drafter):
    """(d): the same maps with and without blocks t+1..L, on greedy continuations of held-out prompts."""
    texts, P, what = greedy_texts(a, model)
    out = {}
    for name, fn in [("after blocks t+1..L", drafts_for_text), ("straight off layer t", direct_drafts)]:
        acc = position_accuracy(model, drafter, texts, drafts=fn)
        tau = {tree: v[0] for tree, v in simulated_tau(model, drafter, texts, P, a.trees, fn).items()}
        out[name] = {"accuracy": acc, "tau": tau}
    k, t = drafter.k, drafter.layer
    n = sum(x.numel() for x in texts)
    table(f"(d) the same maps (t={t}), drafts after the upper blocks or straight off layer t: accuracy, "
          f"{n} positions of {what}",
          ["drafts"] + [f"top-1 +{i + 1}" for i in range(k)] + [f"top-5 +{i + 1}" for i in range(k)],
          [[name] + r["accuracy"][1] + r["accuracy"][5] for name, r in out.items()])
    table("(d) tau (tokens per pass), greedy tree decoding replayed on the same text (analyze.simulated_tau)",
          ["drafts"] + list(a.trees), [[name] + [r["tau"][tree] for tree in a.trees] for name, r in out.items()])
    return out


def ratio_interval(steps_a, steps_b, n_resamples=2000, seed=0):
    """95% bootstrap interval of tau_a / tau_b over sequences: steps_x[s] holds the tokens each
    step of sequence s emitted (simulated_tau's second output). The sequences are resampled
    together, so the interval is that of the paired comparison on the same texts."""
    g = torch.Generator().manual_seed(seed)
    tok = [torch.tensor([[sum(s), len(s)] for s in x], dtype=torch.float64) for x in (steps_a, steps_b)]  # (S, 2)
    idx = torch.randint(len(steps_a), (n_resamples, len(steps_a)), generator=g)    # (R, S) sequences drawn
    tau = [t[idx].sum(1) for t in tok]                                              # (R, 2) tokens, steps
    ratio = (tau[0][:, 0] / tau[0][:, 1] / (tau[1][:, 0] / tau[1][:, 1])).sort().values
    return ratio[int(0.025 * n_resamples)].item(), ratio[int(0.975 * n_resamples) - 1].item()


def tau_ceiling(a, model, drafter, versus=None):
    """(e): tau (tokens per pass) of greedy tree decoding replayed with these drafts and the trees of --taus,
    every node carrying pseudo tokens: with full-W1xW2x... trees, how far a bigger tree alone could take
    tau, whatever its pass costs. versus: a second drafter on the same text, and the ratio of the two
    taus with its 95% bootstrap interval over the texts."""
    texts, P, what = greedy_texts(a, model)
    drafters = [drafter] + ([versus] if versus else [])
    runs = [simulated_tau(model, d, texts, P, a.taus) for d in drafters]
    rows = [[f"tau, {d.kind}"] + [r[tree][0] for tree in a.taus] for d, r in zip(drafters, runs)]
    if versus:
        ratios = [(runs[0][tree][0] / runs[1][tree][0], *ratio_interval(runs[0][tree][1], runs[1][tree][1]))
                  for tree in a.taus]
        rows.append(["ratio (95% over texts)"] + [f"{r:.3f} ({lo:.3f}-{hi:.3f})" for r, lo, hi in ratios])
    sizes = [len(parse_tree(tree, drafter.k)) + 1 for tree in a.taus]
    table(f"(e) tau of greedy tree decoding replayed with the drafters' drafts, by tree (nodes), on {len(texts)} "
          f"texts, {what}" + (f", drafting from the {a.draft_vocab}-token draft vocabulary" if a.draft_vocab else ""),
          ["drafter"] + [f"{tree} ({n})" for tree, n in zip(a.taus, sizes)], rows)
    return {tree: runs[0][tree][0] for tree in a.taus}


def plot(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cos = results["cosine"]
    fig, axes = plt.subplots(1, 2 if "sweep" in results else 1, figsize=(11 if "sweep" in results else 5.5, 4),
                             squeeze=False)
    ax = axes[0, 0]
    t = results["layer"]
    for i in range(len(cos[0])):
        ax.plot(range(t, t + len(cos)), [row[i] for row in cos], marker="o", label=f"position +{i + 1}")
    ax.set(xlabel="after block (block t: straight out of the maps)", ylabel="cosine(pseudo, real)",
           title="pseudo vs real hidden states", xticks=list(range(t, t + len(cos))))
    ax.legend(fontsize=8)
    if "sweep" in results:
        ax = axes[0, 1]
        ts = sorted(results["sweep"], key=int)
        for i in range(len(results["sweep"][ts[0]])):
            ax.plot([int(x) for x in ts], [results["sweep"][x][i] for x in ts], marker="o", label=f"position +{i + 1}")
        ax.set(xlabel="transfer layer t", ylabel="top-1 accuracy", title="accuracy by transfer layer",
               xticks=[int(x) for x in ts])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "analysis.png"), dpi=120)
    print(f"\nwrote {os.path.join(out, 'analysis.png')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/shakespeare")
    p.add_argument("--drafter", default=None, help="default: CHECKPOINT/hidden_transfer.safetensors")
    p.add_argument("--data", default="data/shakespeare",
                   help="folder with val.bin (held-out text), or 'self': the model's own greedy text")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=32,
                   help="(d) and --data self: tokens of each sequence before the greedy continuation")
    p.add_argument("--upper-blocks", action="store_true",
                   help="(d): the same maps with and without blocks t+1..L, accuracy and tau")
    p.add_argument("--trees", default="chain,small", help="(d): comma-separated static trees for tau")
    p.add_argument("--taus", default=None,
                   help="(e): comma-separated static trees, e.g. small,full-4x4x4x4,full-32x16x4: the tau each "
                        "would reach with these drafts (any drafter kind; only (e) for a Medusa drafter)")
    p.add_argument("--versus", default=None,
                   help="(e): a second drafter file (either kind) replayed on the same text, and the ratio of the "
                        "two taus with a 95%% bootstrap interval over the texts (the paper's comparison)")
    p.add_argument("--prompts", default=None,
                   help="(d) and (e): replay decoding on the model's greedy answers to these chat requests (a "
                        "JSON file like data/chat_prompts.json) instead of continuations of held-out text")
    p.add_argument("--answer-len", type=int, default=48, help="--prompts: most tokens of an answer")
    p.add_argument("--draft-vocab", type=int, default=0,
                   help="draft from the drafter's N most frequent training tokens, as decoding does (0: all)")
    p.add_argument("--sweep-steps", type=int, default=0, help="> 0: run the transfer-layer sweep (c)")
    p.add_argument("--k", type=int, default=4, help="k of the sweep's drafters")
    p.add_argument("--out", default="runs/analysis")
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    a.trees = a.trees.split(",")
    a.taus = a.taus.split(",") if a.taus else []
    os.makedirs(a.out, exist_ok=True)
    model = Transformer.from_pretrained(a.checkpoint, device=pick_device(a.device))
    drafter = restrict_vocab(load_drafter(a.drafter or os.path.join(a.checkpoint, "hidden_transfer.safetensors"),
                                          model), model, a.draft_vocab)
    versus = restrict_vocab(load_drafter(a.versus, model), model, a.draft_vocab) if a.versus else None
    if versus and not a.taus:
        p.error("--versus compares two drafters' tau in (e): give --taus too")
    if drafter.kind != "hidden-transfer" and (not a.taus or a.upper_blocks or a.sweep_steps):
        p.error(f"a {drafter.kind} drafter: only (e) applies (--taus); (a)-(d) read hidden transfer's maps")
    if drafter.kind != "hidden-transfer" and a.prompts:
        a.batches = []    # (e) alone, on the model's answers to --prompts: no held-out text needed
    elif a.data == "self":
        a.batches = self_batches(model, Tokenizer(a.checkpoint).bos_id, a.batches, a.batch_size, a.seq_len,
                                 a.prompt_len)
    else:
        tok = Tokenizer(a.checkpoint)
        a.batches = [x.to(model.device) for x in held_out_batches(a.data, a.batches, a.batch_size, a.seq_len, tok=tok)]
    if drafter.kind != "hidden-transfer":
        return {"tau_ceiling": tau_ceiling(a, model, drafter, versus)}
    n_tok = sum(x.numel() for x in a.batches)
    results = {"layer": drafter.layer, "k": drafter.k, "tokens": n_tok, "data": a.data}

    acc = position_accuracy(model, drafter, a.batches)
    results["accuracy"] = acc
    table(f"(a) accuracy of each future position, transfer layer t={drafter.layer}, {n_tok} held-out positions",
          ["position", "top-1", "top-5"], [[f"+{i + 1}", acc[1][i], acc[5][i]] for i in range(drafter.k)])

    cos = cosine_by_layer(model, drafter, a.batches)
    results["cosine"] = cos
    table("(b) cosine(pseudo state of j+i, real state of j+i) after each block",
          ["block"] + [f"+{i + 1}" for i in range(drafter.k)],
          [[f"{drafter.layer + r}" + (" (transfer)" if r == 0 else "")] + row for r, row in enumerate(cos)])

    if a.sweep_steps:
        sweep = layer_sweep(a, model)
        results["sweep"] = {str(t): v for t, v in sweep.items()}
        table(f"(c) top-1 accuracy by transfer layer t (k={a.k}, {a.sweep_steps} training steps each)",
              ["t"] + [f"+{i + 1}" for i in range(a.k)], [[t] + v for t, v in sweep.items()])
    if a.upper_blocks:
        results["upper_blocks"] = upper_blocks(a, model, drafter)
    if a.taus:
        results["tau_ceiling"] = tau_ceiling(a, model, drafter, versus)
    with open(os.path.join(a.out, "analysis.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, a.out)
    return results


if __name__ == "__main__":
    main()
