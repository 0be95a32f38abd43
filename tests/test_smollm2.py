"""The real model: SmolLM2-135M-Instruct, a 30-block Llama shipped as a Q4_1 GGUF file, against
transformers' reading of the same file: logits, greedy chat, lossless tree decoding, the tokenizer
and chat template, the command line's --chat prompt; then the data conventions of a 49k/128k vocabulary."""
import contextlib
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import regex
import torch
from torch.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "checkpoints" / "smollm2"
GGUF = DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"
if not GGUF.exists():
    if os.environ.get("HT_REQUIRE_SMOLLM2") == "1":  # CI fetches it first: absent there is a failure
        pytest.fail(f"{GGUF} is missing and HT_REQUIRE_SMOLLM2=1: run python data/smollm2.py first", pytrace=False)
    pytest.skip("run python data/smollm2.py first", allow_module_level=True)

import transformers  # noqa: E402

import decode  # noqa: E402
import train  # noqa: E402
from decode import Sampler, generate_ar, generate_tree  # noqa: E402
from model import Tokenizer, Transformer  # noqa: E402
from transfer import load_drafter, new_drafter, restrict_vocab  # noqa: E402
from helpers import assert_drafts_as_in_training, decoding_drafts  # noqa: E402

QUESTION = "What is the capital of France?"
CHAT = [{"role": "user", "content": QUESTION}]


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def model():
    return Transformer.from_pretrained(str(DIR))  # the folder holding the one .gguf; float32


@pytest.fixture(scope="module")
def tok(model):
    return Tokenizer(str(DIR))  # after the model: the file's parsed metadata is reused


@pytest.fixture(scope="module")
def parse_once():
    """A context in which gguf builds each file's reader and each table of tensor names once. transformers
    parses the file's metadata for the model's config, again for its weights and again for the tokenizer
    (seconds each: 49k tokens and their merges), and rebuilds the table of tensor names for each of the
    model's ~400 submodules; all pure functions of their arguments. Remembered, each runs once, and what
    transformers reads and computes is unchanged (our own loader is never inside the context)."""
    import gguf
    reader = functools.lru_cache(maxsize=1)(gguf.GGUFReader)
    names = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)

    @contextlib.contextmanager
    def context():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(gguf, "GGUFReader", reader)
            mp.setattr(gguf, "get_tensor_name_map", names)
            yield
    yield context
    reader.cache_clear()  # it maps the file


@pytest.fixture(scope="module")
def hf_model(parse_once):
    with parse_once():
        return transformers.AutoModelForCausalLM.from_pretrained(str(DIR), gguf_file=GGUF.name,
                                                                 dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tok(parse_once):
    with parse_once():
        return transformers.AutoTokenizer.from_pretrained(str(DIR), gguf_file=GGUF.name)


def hf_chat_ids(hf_tok, messages):
    # transformers 5 returns a BatchEncoding here
    return list(hf_tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


@pytest.fixture(scope="module")
def chat_ids(tok):
    return tok.apply_chat_template(CHAT)


@pytest.fixture(scope="module")
def plain64(model, chat_ids):
    """64 greedy tokens of plain decoding, past the end of the answer (no stop id)."""
    return generate_ar(model, chat_ids, 64, Sampler())[0]


# ----------------------------------------------------------------------------- the model

def test_model_as_published(model, tok):
    """SmolLM2-135M's shape as its GGUF metadata states it; the vocabulary fits the embedding."""
    a = model.args
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_dim) == (576, 30, 9, 3, 64, 1536)
    assert (a.vocab_size, a.rope_theta, a.max_seq_len, a.tie_embeddings) == (49152, 100000.0, 8192, True)
    assert a.rope_scaling is None and tok.vocab_size == a.vocab_size


def test_logits_match_transformers(model, hf_model, tok, hf_tok):
    """float32 logits at every position of a chat prompt within 1e-4 of transformers' reading of the file;
    also for a 300-token text, where the blocked weights' products take their long-pass path."""
    messages = [{"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
                {"role": "user", "content": "Name three rivers in Europe, and say which is longest."}]
    ids = tok.apply_chat_template(messages)
    assert ids == hf_chat_ids(hf_tok, messages) and len(ids) > 30
    for x in (torch.tensor([ids]), torch.tensor([(ids * 10)[:300]])):
        assert_close(model(x), hf_model(x).logits, atol=1e-4, rtol=0)


def test_greedy_chat_matches_transformers(plain64, hf_model, chat_ids):
    """64 greedy tokens of plain decoding, through the chat template, identical to transformers' generate."""
    x = torch.tensor([chat_ids])
    config = hf_model.generation_config
    eos, config.eos_token_id = config.eos_token_id, None  # on past the end of the answer, as plain64
    try:
        want = hf_model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=64,
                                 pad_token_id=2)[0, x.shape[1]:].tolist()
    finally:
        config.eos_token_id = eos
    assert len(want) == 64 and plain64 == want
    assert plain64.index(2) == 7  # the answer's end of turn is among them: 56 tokens after it too


@pytest.mark.parametrize("kind", ["hidden-transfer", "medusa"])
def test_tree_decoding_is_lossless(model, chat_ids, plain64, kind):
    """Untrained drafters (hidden transfer at layer 15; Medusa heads copying the LM head) with the
    "small" tree emit exactly plain decoding's first 32 tokens: the answer, its end of turn (token 8)
    and 24 tokens past it. (Both accept drafts within the first 16; an untrained drafter's tree step
    emits little more than one token at the cost of several plain ones, so 64 would double the time.)"""
    drafter = (new_drafter("hidden-transfer", model, 3, 15) if kind == "hidden-transfer"
               else new_drafter("medusa", model, 3)).eval()
    out, stats = generate_tree(model, drafter, chat_ids, 32, Sampler(), "small")
    assert out == plain64[:32]
    hist = {int(n): c for n, c in stats["accept_hist"].items()}
    assert sum(n * c for n, c in hist.items()) == 31 and sum(hist.values()) == stats["steps"]
    assert max(hist) > 1  # some drafts were accepted: accepted paths were checked too, not only roots


def test_shipped_default_is_lossless_and_its_drafts_are_the_training_passes(model, chat_ids, plain64, monkeypatch):
    """What `decode.py --checkpoint checkpoints/smollm2` runs: the shipped hidden-transfer drafter
    with decode.json's tree and spawn, on the blocked float32 weights. Plain decoding's tokens, and
    every step's drafts (from the accepted node, or from an ancestor past the spawning nodes) equal
    the training pass's at that position."""
    settings = json.loads((DIR / "decode.json").read_text())
    drafter = load_drafter(str(DIR / "hidden_transfer.safetensors"), model, "hidden-transfer")
    restrict_vocab(drafter, model, settings.get("draft_vocab", 0))
    out, seen = decoding_drafts(monkeypatch, model, drafter, chat_ids, 32, settings["tree"], settings.get("spawn"))
    assert out == plain64[:32]
    assert len(seen) < 31  # trained drafts: some steps emit more than one token
    assert_drafts_as_in_training(model, drafter, chat_ids, out, seen, rtol=0, atol=2e-3)
    if settings.get("draft_vocab"):  # drafted from the vocabulary only
        assert all(torch.isinf(rows).sum() == rows.shape[0] * (49152 - settings["draft_vocab"]) for _, rows in seen)


@pytest.mark.parametrize("kind", ["hidden-transfer", "medusa"])
def test_shipped_token_counts_are_the_training_runs_text(kind):
    """The counts the shipped drafters' draft vocabulary comes from are those of the text their runs
    trained on (train_log.json): every run's --data train.bin, once per run."""
    from safetensors.torch import load_file
    runs = [r for r in json.loads((DIR / "train_log.json").read_text()).values()
            if isinstance(r, dict) and r.get("config", {}).get("kind") == kind]
    folders = [d for r in runs for d in ([r["config"]["data"]] if isinstance(r["config"]["data"], str)
                                         else r["config"]["data"])]  # one folder, or several joined
    want = sum(np.bincount(np.fromfile(ROOT / d / "train.bin", dtype=np.uint16), minlength=49152) for d in folders)
    assert len(runs) >= 4
    assert load_file(str(DIR / f"{kind.replace('-', '_')}.safetensors"))["token_counts"].tolist() == want.tolist()


def test_continue_batch_ragged_prompts(model, tok, chat_ids):
    """train.continue_batch on prompts of different lengths (left padded) gives each prompt's own
    greedy continuation, cut after its end of turn, on a real grouped-query model."""
    other = tok.apply_chat_template([{"role": "user", "content": "Write a haiku about the sea, please."}])
    prompts = [chat_ids, other, chat_ids[:9]]
    assert len({len(p) for p in prompts}) == 3
    got = train.continue_batch(model, prompts, 12, stop_ids=tok.eos_ids)
    for p, g in zip(prompts, got):
        assert g == generate_ar(model, p, 12, Sampler(), tok.eos_ids)[0]
    assert got[0][-1] in tok.eos_ids  # the capital answer ends inside the 12 tokens


def test_chat_data_answers_the_given_requests_and_resumes(model, tok, tmp_path):
    """train.py chat-data --prompts: each chat is the chat template around a request, then the model's
    greedy answer up to its end of turn, as decoding writes it; the requests after the training chats
    are held out; a batch already on disk (an interrupted run) is kept, not made again."""
    requests = ["Write a haiku about a lighthouse.", "What is 12 times 12?", "Name a planet."]
    (tmp_path / "r.json").write_text(json.dumps({"prompts": [{"kind": "x", "text": r} for r in requests]}))
    out = tmp_path / "data"
    (out / "parts").mkdir(parents=True)
    np.save(out / "parts" / "train-00001.npy", np.array([5, 6, 7]))  # made before an interruption
    train.main(["chat-data", "--checkpoint", str(DIR), "--prompts", str(tmp_path / "r.json"), "--out", str(out),
                "--sequences", "2", "--batch-size", "1", "--answer-len", "10", "--quiet"])

    def chat(text):
        ids = tok.apply_chat_template([{"role": "user", "content": text}])
        return ids + generate_ar(model, ids, 10, Sampler(), tok.eos_ids)[0]
    assert train.load_tokens(str(out / "train.bin"), tok).tolist() == chat(requests[0]) + [5, 6, 7]
    assert train.load_tokens(str(out / "val.bin"), tok).tolist() == chat(requests[2])
    assert not (out / "parts").exists()
    # --draft-on answers scores exactly the answer's tokens
    asked = tok.apply_chat_template([{"role": "user", "content": requests[2]}])
    answer = len(chat(requests[2])) - len(asked)
    assert train.answer_tokens(train.load_tokens(str(out / "val.bin"), tok), tok).tolist() == \
        [False] * len(asked) + [True] * answer
    assert "--prompts" in json.loads((out / "meta.json").read_text())["made_by"]

    too_few = r"holds 3 requests; --sequences and the held-out chats need 17: .*data/chat_requests.py --n 17"
    with pytest.raises(SystemExit, match=too_few):
        train.main(["chat-data", "--checkpoint", str(DIR), "--prompts", str(tmp_path / "r.json"),
                    "--out", str(tmp_path / "o"), "--sequences", "16", "--batch-size", "1"])
    (tmp_path / "bad.json").write_text('{"requests": []}')
    with pytest.raises(SystemExit, match=r"--prompts .*bad.json: not a JSON list of requests"):
        train.main(["chat-data", "--checkpoint", str(DIR), "--prompts", str(tmp_path / "bad.json"),
                    "--out", str(tmp_path / "o")])


def test_analyze_tau_by_tree_on_chat_answers(tmp_path, capsys):
    """analyze.py (e) on SmolLM2's greedy answers to chat requests, with the shipped Medusa heads and the
    draft vocabulary decoding uses: replayed, chain accepts what decoding with chain accepts, and the
    full tree holding chain's paths at least as much on the first step; (a)-(d) are refused for Medusa."""
    import analyze
    requests = ["Name three colours.", "What is 7 times 8?"]
    (tmp_path / "r.json").write_text(json.dumps(requests))
    argv = ["--checkpoint", str(DIR), "--drafter", str(DIR / "medusa.safetensors"), "--prompts",
            str(tmp_path / "r.json"), "--answer-len", "24", "--draft-vocab", "8192", "--out", str(tmp_path)]
    tau = analyze.main(argv + ["--taus", "chain,full-3x2x2x1"])["tau_ceiling"]
    out = capsys.readouterr().out
    assert "(e) tau of greedy tree decoding replayed with the drafters' drafts, by tree (nodes), on 2 texts" in out
    assert "| tau, medusa | %.3f | %.3f |" % (tau["chain"], tau["full-3x2x2x1"]) in out and "full-3x2x2x1 (34)" in out
    # --versus: the same replay for a second drafter, and the ratio of the two with its interval
    ht_tau = analyze.main(argv + ["--taus", "chain", "--versus", str(DIR / "hidden_transfer.safetensors")])
    out = capsys.readouterr().out
    ratio = regex.search(r"\| ratio \(95% over texts\) \| ([0-9.]+) \(([0-9.]+)-([0-9.]+)\) \|", out)
    assert ratio and ht_tau["tau_ceiling"]["chain"] == tau["chain"]
    got_ht = float(regex.search(r"\| tau, hidden-transfer \| ([0-9.]+) \|", out)[1])
    assert float(ratio[1]) == pytest.approx(tau["chain"] / got_ht, abs=2e-3)
    assert float(ratio[2]) <= float(ratio[1]) <= float(ratio[3])
    model = Transformer.from_pretrained(str(DIR))
    drafter = restrict_vocab(load_drafter(str(DIR / "medusa.safetensors"), model), model, 8192)
    texts, P = analyze.chat_answers(model, Tokenizer(str(DIR)), requests, 24)
    for x, p in zip(texts, P):
        steps = []
        generate_tree(model, drafter, x[0, :p].tolist(), 24, Sampler(), "chain",
                      on_tokens=lambda new: steps.append(len(new)))
        replay = analyze.simulated_tau(model, drafter, [x], p, ("chain", "full-3x2x2x1"))
        assert replay["chain"][1][0] == steps[1:len(replay["chain"][1][0]) + 1]
        assert replay["full-3x2x2x1"][1][0][0] >= replay["chain"][1][0][0]
    with pytest.raises(SystemExit):
        analyze.main(argv + ["--upper-blocks"])
    assert "a medusa drafter: only (e) applies (--taus)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the tokenizer

def llama_cpp_smollm_split(encode, text):
    # tokenizer.ggml.pre = "smollm": llama.cpp (and SmolLM2's own tokenizer.json, a Digits
    # pre-tokenizer) put every \p{N} character alone before GPT-2's split. transformers' GGUF
    # tokenizer keeps GPT-2's split only, which differs on whitespace before a digit ("  42"):
    # applying llama.cpp's rule on top of it gives the oracle.
    return [i for piece in regex.split(r"(\p{N})", text) if piece for i in encode(piece)]


SAMPLE = ["Hello, world!", "naïve café — 東京 😀🚀 👩‍👩‍👧 ﬁ", "def f(x):\n\treturn x**2  # square\n",
          "   lots   of    spaces   ", "line1\r\nline2\r\n", "\n\n\nthree newlines", "3.14159 and 2024-11-28, 1,000,000",
          "  42 and\t\t9 and x  1", "½ ² ٣ Ⅻ", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
          "<|endoftext|>tail", "I'm don't WE'LL", " leading space", "trailing  ", "", "x" * 50,
          "<|im_start|> with spaces <|im_end|>", "{\"key\": [1, 2, 3]}", "Ünïcödé ÀÉÎ ß ø"]


def test_tokenizer_matches_transformers(tok, hf_tok):
    """encode and decode as transformers' tokenizer of the same file (llama.cpp's digit rule on top),
    special tokens written in the text read as such, no BOS."""
    plain = lambda text: hf_tok.encode(text, add_special_tokens=False)  # noqa: E731
    for text in SAMPLE:
        ids = tok.encode(text)
        assert ids == llama_cpp_smollm_split(plain, text), text
        if not regex.search(r"\s\p{N}", text):  # where the digit rule changes nothing, transformers itself
            assert ids == hf_tok.encode(text), text
        assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True), text
    assert tok.encode("<|im_start|>user") == [1] + tok.encode("user")


def test_conventions(tok):
    """SmolLM2's own conventions: no BOS added, <|im_end|> (2) alone ends generation."""
    assert tok.add_bos is False and tok.encode("Hello")[0] != tok.bos_id
    assert tok.eos_ids == {2} and tok.id_to_piece(2) == "<|im_end|>"


# ----------------------------------------------------------------------------- the command line

@pytest.fixture
def cli(model, monkeypatch, capsys):
    """decode.main in-process with --json; the model loads once per module (the loader is the one
    the fixture used, checked to be asked for the same checkpoint)."""
    def from_pretrained(path, device="cpu", dtype=torch.float32):
        assert (Path(path), device, dtype) == (DIR, "cpu", torch.float32)
        return model
    monkeypatch.setattr(decode.Transformer, "from_pretrained", from_pretrained)

    def run(*argv):
        threads = torch.get_num_threads()  # checkpoints/smollm2/decode.json sets 2: not for the rest of the suite
        try:
            decode.main(["--checkpoint", str(DIR), "--device", "cpu", "--dtype", "float32", "--json", *argv])
        finally:
            torch.set_num_threads(threads)
        return json.loads(capsys.readouterr().out)
    return run


@pytest.mark.parametrize("system", [None, "You answer in one short sentence."], ids=["no-system", "system"])
def test_cli_chat_prompt_ids(cli, hf_tok, plain64, system):
    """--chat feeds exactly transformers' apply_chat_template ids; greedy plain decoding's answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + CHAT
    argv = ["--chat", "--prompt", QUESTION, "--method", "ar", "--max-new-tokens", "8"]
    r = cli(*argv, *(["--system", system] if system else []))
    assert r["prompt_ids"] == hf_chat_ids(hf_tok, messages)
    assert 1 <= len(r["token_ids"]) <= 8
    if system is None:
        assert r["token_ids"] == plain64[:len(r["token_ids"])]
        assert "Paris" in r["text"] and r["stopped"] == "end of text" and r["token_ids"][-1] == 2


def test_cli_hidden_transfer_chat(cli, plain64):
    """--method hidden-transfer --drafter init: the same answer, and the result reports the drafter."""
    r = cli("--chat", "--prompt", QUESTION, "--method", "hidden-transfer", "--drafter", "init", "--k", "3",
            "--layer", "15", "--max-new-tokens", "8", "--threads", "1")
    assert r["token_ids"] == plain64[:len(r["token_ids"])] and r["stopped"] == "end of text"
    settings = json.loads((DIR / "decode.json").read_text())  # the checkpoint's defaults
    assert (r["drafter"], r["k"], r["layer"]) == ("init", 3, 15)
    assert (r["tree"], r["spawn"]) == (settings["tree"], settings["spawn"])


# ----------------------------------------------------------------------------- data

SHAKESPEARE = ROOT / "checkpoints" / "shakespeare"


def test_data_of_another_tokenizer_refused(tmp_path, tok):
    """Token ids written with the Shakespeare tokenizer are refused for SmolLM2, with the fix named."""
    spm = Tokenizer(str(SHAKESPEARE))
    train.write_tokens(str(tmp_path), {"train": spm.encode("ROMEO:\nBut soft, what light")}, spm, "a test")
    file = str(tmp_path / "train.bin")
    assert list(train.load_tokens(file, spm)) == spm.encode("ROMEO:\nBut soft, what light")  # its own: fine
    with pytest.raises(ValueError, match=r"another tokenizer \(a test\).*python train.py chat-data --checkpoint"):
        train.load_tokens(file, tok)
    import analyze  # and analyze.py, which reads held-out text the same way
    train.write_tokens(str(tmp_path), {"val": spm.encode("ROMEO:\nBut soft, what light") * 40}, spm, "a test")
    with pytest.raises(ValueError, match=r"another tokenizer \(a test\)"):
        analyze.main(["--checkpoint", str(DIR), "--data", str(tmp_path), "--seq-len", "16", "--out", str(tmp_path)])


class FakeLlama3Tokenizer:
    vocab_size = 128256

    def fingerprint(self):
        return "llama3-fake"


def test_ids_past_uint16_round_trip(tmp_path):
    """A 128k vocabulary is stored as uint32 and its ids >= 65536 come back intact."""
    assert train.token_dtype(128256) is np.uint32 and train.token_dtype(49152) is np.uint16
    assert train.token_dtype(65536) is np.uint16 and train.token_dtype(65537) is np.uint32  # ids 0..65535
    ids = [0, 1, 65535, 65536, 100000, 128255]
    fake = FakeLlama3Tokenizer()
    train.write_tokens(str(tmp_path), {"train": ids, "val": ids[::-1]}, fake, "a test")
    assert json.loads((tmp_path / "meta.json").read_text())["dtype"] == "uint32"
    assert train.load_tokens(str(tmp_path / "train.bin"), fake).tolist() == ids
    assert train.load_tokens(str(tmp_path / "val.bin"), fake).tolist() == ids[::-1]


@pytest.mark.parametrize("folder", ["smollm2-requests", "smollm2-requests-2"])
def test_answer_tokens_of_the_shipped_chats(tok, folder):
    """--draft-on answers on the shipped training chats: one answer per chat, each right after
    "<|im_start|>assistant\\n", at most --answer-len (128) tokens, ended by <|im_end|> or cut there,
    and nothing of a system prompt or a user turn in it."""
    ids = train.load_tokens(str(ROOT / "data" / folder / "val.bin"), tok)
    keep = train.answer_tokens(ids, tok)
    starts = np.flatnonzero(keep[1:] & ~keep[:-1]) + 1
    ends = np.flatnonzero(keep[:-1] & ~keep[1:]) + 1
    ends = np.append(ends, len(ids)) if keep[-1] else ends
    header = tok.encode("<|im_start|>assistant\n", bos=False)
    assert len(starts) == len(ends) == int(np.sum(ids == header[0])) // 3 == 64  # 64 chats of 3 turns
    for s, e in zip(starts, ends):
        assert ids[s - len(header):s].tolist() == header
        assert e - s <= 128 and (ids[e - 1] in tok.eos_ids or e - s == 128)
        assert header[0] not in ids[s:e].tolist()  # no turn begins inside it


def test_user_turn_prefix(tok, hf_tok):
    """The ids before the first user message's text: the template's default system turn and the user header."""
    mark = "\x00"
    text = hf_tok.apply_chat_template([{"role": "user", "content": mark}], tokenize=False)
    head = text[: text.index(mark)]
    assert head.startswith("<|im_start|>system\n") and head.endswith("<|im_end|>\n<|im_start|>user\n")
    prefix = train.user_turn_prefix(tok)
    assert hf_tok.decode(prefix) == head and prefix == hf_tok.encode(head)
