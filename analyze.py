"""The paper's analyses of hidden transfer, on held-out text.

    python analyze.py                      # shipped model and drafter: (a) and (b)
    python analyze.py --sweep-steps 200    # also (c): a drafter trained for every transfer layer t

(a) top-1 / top-5 accuracy of each future position i = 1..k (against the base
    model's own argmax, which is what greedy verification accepts);
(b) cosine similarity between the pseudo hidden state of position j+i and the
    true hidden state of that position, after every block from t to L;
(c) top-1 accuracy by transfer layer t.
Tables are printed; PNG plots are written next to --out when matplotlib is installed.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

from model import Transformer
from train import get_batch, load_tokens, pick_device
from transfer import drafts_for_text, load_drafter, pseudo_hidden


def held_out_batches(data_dir, n_batches, batch_size, seq_len, seed=0):
    data = load_tokens(os.path.join(data_dir, "val.bin"))
    return [get_batch(data, batch_size, seq_len, seed, s)[0] for s in range(n_batches)]


@torch.no_grad()
def position_accuracy(model, drafter, batches, topk=(1, 5)):
    """{k: [accuracy of position i for i = 1..k]}: does D_i's top-k hold the base model's token?"""
    hits = {n: torch.zeros(drafter.k) for n in topk}
    count = torch.zeros(drafter.k)
    for x in batches:
        real, draft = drafts_for_text(model, drafter, x)          # (B, T, d), (B, T, k, V)
        target = model.logits(real).argmax(-1)                    # (B, T) the base model's own next token
        T = x.shape[1]
        for i in range(1, drafter.k + 1):
            top = draft[:, : T - i, i - 1].topk(max(topk), -1).indices  # (B, T-i, maxk)
            tgt = target[:, i:, None]                              # (B, T-i, 1) the token at j+i+1
            for n in topk:
                hits[n][i - 1] += (top[..., :n] == tgt).any(-1).sum()
            count[i - 1] += tgt.numel()
    return {n: (hits[n] / count).tolist() for n in topk}


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
    ax.set(xlabel="block (t = transfer output)", ylabel="cosine(pseudo, real)", title="pseudo vs real hidden states")
    ax.legend()
    if "sweep" in results:
        ax = axes[0, 1]
        ts = sorted(results["sweep"], key=int)
        for i in range(len(results["sweep"][ts[0]])):
            ax.plot([int(x) for x in ts], [results["sweep"][x][i] for x in ts], marker="o", label=f"position +{i + 1}")
        ax.set(xlabel="transfer layer t", ylabel="top-1 accuracy", title="accuracy by transfer layer")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "analysis.png"), dpi=120)
    print(f"\nwrote {os.path.join(out, 'analysis.png')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/shakespeare")
    p.add_argument("--drafter", default=None, help="default: CHECKPOINT/hidden_transfer.safetensors")
    p.add_argument("--data", default="data/shakespeare", help="folder with val.bin (the held-out works)")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--sweep-steps", type=int, default=0, help="> 0: run the transfer-layer sweep (c)")
    p.add_argument("--k", type=int, default=4, help="k of the sweep's drafters")
    p.add_argument("--out", default="runs/analysis")
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    model = Transformer.from_pretrained(a.checkpoint, device=pick_device(a.device))
    drafter = load_drafter(a.drafter or os.path.join(a.checkpoint, "hidden_transfer.safetensors"), model)
    a.batches = [x.to(model.output.weight.device)
                 for x in held_out_batches(a.data, a.batches, a.batch_size, a.seq_len)]
    n_tok = sum(x.numel() for x in a.batches)
    results = {"layer": drafter.layer, "k": drafter.k, "tokens": n_tok}

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
    with open(os.path.join(a.out, "analysis.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, a.out)


if __name__ == "__main__":
    main()
