"""train.py pretraining: a short run lowers the loss and writes a checkpoint that loads;
an interrupted and resumed run ends with exactly the parameters of an uninterrupted one;
held-out evaluation."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import train
from model import Transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "checkpoints", "shakespeare", "tokenizer.model")


@pytest.fixture
def corpus(tmp_path):
    """A learnable token stream: a fixed random cycle of 40 tokens with 10% noise."""
    rng = np.random.default_rng(0)
    cycle = rng.integers(3, 4096, 40)
    ids = np.tile(cycle, 200)
    noise = rng.random(ids.size) < 0.1
    ids[noise] = rng.integers(3, 4096, noise.sum())
    for split in ("train", "val"):
        ids.astype(np.uint16).tofile(tmp_path / f"{split}.bin")
    return tmp_path


def pretrain_args(corpus, out, steps, *extra):
    return ["pretrain", "--data", str(corpus), "--tokenizer", TOKENIZER, "--out", str(out),
            "--dim", "32", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--hidden-dim", "64",
            "--max-seq-len", "64", "--seq-len", "32", "--batch-size", "4", "--steps", str(steps),
            "--warmup", "2", "--lr", "3e-3", "--eval-every", "1000", "--eval-batches", "2",
            "--save-every", "2", "--quiet", *extra]


def test_short_pretraining_lowers_loss_and_saves_a_loadable_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    train.main(pretrain_args(corpus, out, 30))
    log = json.load(open(out / "train_log.json"))["history"]
    model = Transformer.from_pretrained(str(out))
    assert model.args.n_kv_heads == 2 and model.args.vocab_size == 4096
    data = np.memmap(corpus / "val.bin", dtype=np.uint16, mode="r")
    loss = train.evaluate(model, data, 32, 8, "cpu")
    assert loss == pytest.approx(log[-1]["val_loss"], abs=0.05)  # bf16 on disk vs float32 in memory
    assert loss < np.log(4096) - 1.0  # far below the uniform guess after 30 steps
    assert os.path.exists(out / "tokenizer.model")


def test_resume_equals_uninterrupted_run(corpus, tmp_path, monkeypatch):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train.main(pretrain_args(corpus, straight, 8))

    real_lr_at = train.lr_at

    def interrupt_at_5(step, a):
        if step == 5:
            raise KeyboardInterrupt  # step 5 never runs; the state after step 4 is on disk
        return real_lr_at(step, a)
    monkeypatch.setattr(train, "lr_at", interrupt_at_5)
    with pytest.raises(KeyboardInterrupt):
        train.main(pretrain_args(corpus, broken, 8))
    assert torch.load(broken / "train_state.pt", weights_only=True)["step"] == 4
    monkeypatch.setattr(train, "lr_at", real_lr_at)
    train.main(pretrain_args(corpus, broken, 8, "--resume"))

    a = torch.load(straight / "train_state.pt", weights_only=True)
    b = torch.load(broken / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])


def test_resume_refuses_other_settings(corpus, tmp_path):
    out = tmp_path / "run"
    train.main(pretrain_args(corpus, out, 2))
    with pytest.raises(SystemExit, match="other settings.*lr"):
        train.main(pretrain_args(corpus, out, 2, "--lr", "1e-2", "--resume"))  # the last --lr wins
    shutil.rmtree(out)
    with pytest.raises(SystemExit, match="no .*train_state.pt"):
        train.main(pretrain_args(corpus, out, 2, "--resume"))


def test_missing_corpus_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="data/prepare.py"):
        train.main(pretrain_args(tmp_path, tmp_path / "run", 2))


def test_greedy_data_is_the_models_own_greedy_decoding(corpus, tmp_path):
    """train.py greedy-data: every sequence = BOS + corpus prompt + what generate_ar emits for it."""
    from decode import Sampler, generate_ar
    base = tmp_path / "base"
    train.main(pretrain_args(corpus, base, 4))
    out = tmp_path / "greedy"
    train.main(["greedy-data", "--checkpoint", str(base), "--data", str(corpus), "--out", str(out),
                "--sequences", "4", "--seq-len", "24", "--prompt-len", "8", "--batch-size", "2", "--quiet"])
    model = Transformer.from_pretrained(str(base))
    for split, n in [("train", 4), ("val", 2)]:
        seqs = np.fromfile(out / f"{split}.bin", dtype=np.uint16).astype(np.int64).reshape(-1, 24)
        assert seqs.shape[0] == n
        for s in seqs.tolist():
            assert s[0] == 1  # BOS
            ids, _ = generate_ar(model, s[:8], 16, Sampler())
            assert ids == s[8:]
    with pytest.raises(SystemExit):
        train.main(["greedy-data", "--seq-len", "8", "--prompt-len", "8"])


class ChatMLIds:
    """A stand-in tokenizer: ChatML with one id per piece (1 = <|im_start|>, 2 = <|im_end|>, 3 =
    'assistant\\n', 4 = 'user\\n', 5 = 'system\\n'), text ids >= 10."""
    chat_template, eos_ids = "ChatML", {2}

    def apply_chat_template(self, messages, add_generation_prompt=True):
        ids = [1, 5, 10, 2]
        for m in messages:
            ids += [1, 4 if m["role"] == "user" else 3, 11, 2]
        return ids + ([1, 3] if add_generation_prompt else [])


def test_answer_tokens_are_the_models_turns_entry_by_entry():
    # pins --draft-on answers: from the token after the assistant header through <|im_end|>; an answer
    # cut at --answer-len ends where the next chat begins; the header's own tokens, the system prompt and
    # the user turn are never answers, nor is a header at the very end with no answer after it
    S, U, A = [1, 5, 10, 2], [1, 4, 12, 13, 2], [1, 3]
    ids = (S + U + A + [20, 21, 2]            # an answer that ends
           + S + U + A + [22, 23, 24]          # cut at --answer-len: runs into the next chat
           + S + U + A + [25, 2, 26]           # a token after <|im_end|> is not the answer's
           + S + U + A)                        # a header at the end: nothing after it
    want = np.zeros(len(ids), dtype=bool)
    for start, n in ((11, 3), (11 + 14, 3), (11 + 28, 2)):
        want[start:start + n] = True
    assert [ids[i] for i in np.flatnonzero(want)] == [20, 21, 2, 22, 23, 24, 25, 2]
    assert np.array_equal(train.answer_tokens(np.array(ids, dtype=np.uint16), ChatMLIds()), want)
    assert not train.answer_tokens(np.array(S + U, dtype=np.uint16), ChatMLIds()).any()

    class NoTemplate(ChatMLIds):
        chat_template = None
    with pytest.raises(ValueError, match="has none: use --draft-on all"):
        train.answer_tokens(np.array(ids), NoTemplate())


def test_batches_score_the_targets_the_mask_names():
    # pins the mask's alignment: keep[b, t] is whether targets[b, t] (the token after input t) is scored
    data = np.random.default_rng(1).integers(0, 50, 2000).astype(np.uint16)
    scored = data % 3 == 0
    x, y, keep = train.get_batch(data, 8, 32, seed=5, step=3, scored=scored)
    assert torch.equal(keep, y % 3 == 0)
    assert torch.equal(torch.stack(train.get_batch(data, 8, 32, seed=5, step=3)), torch.stack([x, y]))
