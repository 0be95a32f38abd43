"""Decoding follows the model's device: every tensor a step makes (trees, masks, positions,
candidates) lives where the model does. On a CPU-only machine the meta device stands in for a
GPU (mixing it with CPU tensors raises, as a GPU would); with CUDA, every method runs there."""
import pytest
import torch

import decode
from decode import Sampler, SelfSpec, generate_ar, generate_tree
from helpers import noisy_drafter, noisy_medusa, prompt_of, tiny_model

METHODS = ["hidden-transfer", "medusa", "self-spec"]


def drafter_for(method, model):
    return {"hidden-transfer": lambda: noisy_drafter(model, 3, 1),
            "medusa": lambda: noisy_medusa(model, 3),
            "self-spec": lambda: SelfSpec((1,), 3)}[method]()


class MetaSampler:
    """Greedy, but the first token is 5 without reading the logits: meta tensors hold no values."""
    greedy = True

    def __call__(self, logits):
        return 5


@pytest.mark.parametrize("tree", ["small", "dynamic-8"])
@pytest.mark.parametrize("method", METHODS)
def test_a_decoding_step_on_the_meta_device(monkeypatch, method, tree):
    # pins that a step's tensors follow the model: the prefill, the first pass, the drafts, the
    # tree, the candidates and the verify pass all run on the meta device, up to the first read
    # of a value (the accepted path), which meta tensors cannot give. A tree left on the CPU
    # (as before) raises a device mismatch before that.
    model = tiny_model()
    drafter = drafter_for(method, model)
    model = model.to("meta")
    if method == "self-spec":  # its draft model reads each drafted token: give it meta drafts
        monkeypatch.setattr(decode, "self_spec_drafts",
                            lambda *a: torch.zeros(3, model.args.vocab_size, device="meta"))
    else:
        drafter = drafter.to("meta")
    if tree.startswith("dynamic"):  # dynamic trees read the draft probabilities: plan on the CPU values
        real_plan = decode.tree_planner

        def planner(spec, k, device="cpu"):
            plan, n = real_plan(spec, k, device)
            def meta_plan(draft):
                tree, ids = plan(torch.rand(draft.shape, generator=torch.Generator().manual_seed(0)))
                return tree, ids.to(draft.device)
            return meta_plan, n
        monkeypatch.setattr(decode, "tree_planner", planner)
    passes = []
    real_pass = decode.tree_pass
    monkeypatch.setattr(decode, "tree_pass", lambda m, d, layout, tokens, cache: passes.append(tokens.shape[0])
                        or real_pass(m, d, layout, tokens, cache))
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        generate_tree(model, drafter, prompt_of(5, 32, seed=0), 10, MetaSampler(), tree)
    assert passes[0] == 1 and passes[1] > 1  # the one-node pass, then a tree's, before the read


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("tree", ["small", "dynamic-8"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_cuda(method, tree):
    # greedy on the GPU equals plain decoding on the GPU, and sampling runs
    model = tiny_model(dtype=torch.float32).cuda()
    drafter = drafter_for(method, model)
    drafter = drafter if method == "self-spec" else drafter.cuda()
    for r in range(3):
        prompt = prompt_of(1 + 3 * r, 32, seed=r)
        want, _ = generate_ar(model, prompt, 30, Sampler())
        got, stats = generate_tree(model, drafter, prompt, 30, Sampler(), tree)
        assert got == want and stats["steps"] < 29
    out, _ = generate_tree(model, drafter, prompt, 20, Sampler(temperature=0.8, top_p=0.9), tree)
    assert len(out) == 20
