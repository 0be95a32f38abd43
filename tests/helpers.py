"""Shared by the tests: random models a bug would move by O(1), and a learnable toy language."""
import torch


def randomize(model, seed=0):
    """O(1) random weights. Default inits give near-uniform logits, where a wrong mask or
    position hides under 1e-4 and greedy decoding meets near-ties; norm gains are not all
    ones, so a swapped or skipped norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # tied weights appear once
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model.eval()


def markov_text(n_seqs, T, vocab, seed):
    """A peaked Markov chain: next = succ[cur] with probability 0.9, else a uniform token."""
    succ = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n_seqs, T, dtype=torch.long)
    x[:, 0] = torch.randint(0, vocab, (n_seqs,), generator=g)
    for t in range(1, T):
        keep = torch.rand(n_seqs, generator=g) < 0.9
        x[:, t] = torch.where(keep, succ[x[:, t - 1]], torch.randint(0, vocab, (n_seqs,), generator=g))
    return x
