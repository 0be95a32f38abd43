"""data/chat_requests.py: the hand-written requests that drafters for chat models train on. The shipped
files are what the script writes, every kind is there, none is (nearly) one of the bench's prompts, and
the second set repeats no request of the first."""
import collections
import json
import os
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
import chat_requests  # noqa: E402  (data/chat_requests.py)

BENCH = [p["text"] for p in json.load(open(os.path.join(ROOT, "data", "chat_prompts.json")))["prompts"]]
SHIPPED = json.load(open(os.path.join(ROOT, "data", "train_requests.json")))
SECOND = json.load(open(os.path.join(ROOT, "data", "train_requests_2.json")))


def test_shipped_file_is_what_the_script_writes(tmp_path):
    out = tmp_path / "r.json"
    chat_requests.main(["--out", str(out)])
    assert json.loads(out.read_text()) == SHIPPED


def test_second_file_is_what_the_script_writes(tmp_path):
    out = tmp_path / "r2.json"
    chat_requests.main(["--set", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == SECOND


@pytest.mark.parametrize("shipped", [SHIPPED, SECOND], ids=["set1", "set2"])
def test_distinct_every_kind_and_every_kind_held_out(shipped):
    texts = [p["text"] for p in shipped["prompts"]]
    assert len(texts) == 1088 and len(set(texts)) == len(texts)
    kinds = collections.Counter(p["kind"] for p in shipped["prompts"])
    bench_kinds = {p["kind"] for p in json.load(open(os.path.join(ROOT, "data", "chat_prompts.json")))["prompts"]}
    assert set(kinds) == bench_kinds
    assert min(kinds.values()) >= 100
    # chat-data holds out the requests after the first 1,024: they cover every kind too
    assert len({p["kind"] for p in shipped["prompts"][1024:]}) == 6


def test_no_request_is_near_a_bench_prompt():
    """The bench measures drafts on prompts no drafter trained on: no request shares more than half its
    content words with a bench prompt (and the check itself catches a reworded bench prompt)."""
    for p in SHIPPED["prompts"]:
        assert p["text"] not in BENCH
        assert chat_requests.too_close(p["text"], BENCH) is None, p["text"]
    assert chat_requests.too_close("Write me a short poem on the first snow of the winter!", BENCH) == BENCH[0]
    assert chat_requests.too_close("Why is the sky so blue?", BENCH) == "Why is the sky blue?"
    assert chat_requests.too_close("Why is the sea salty?", BENCH) is None


def test_second_set_repeats_no_request_of_the_first_nor_nears_the_bench():
    """Training on both files never sees a request twice, and the bench stays held out from set 2 too."""
    first = {p["text"] for p in SHIPPED["prompts"]}
    for p in SECOND["prompts"]:
        assert p["text"] not in first, p["text"]
        assert chat_requests.too_close(p["text"], BENCH) is None, p["text"]


def test_more_requests_than_the_second_pool_makes_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "r2.json"
    with pytest.raises(SystemExit) as e:
        chat_requests.main(["--set", "2", "--n", "100000", "--out", str(out)])
    assert e.value.code == 2 and "add templates or fillers" in capsys.readouterr().err
    assert not out.exists()


def test_templates_near_the_bench_are_dropped():
    """A template that makes a bench prompt (or a near one) never reaches the pools to draw from."""
    bench = ["Write a Rust function that merges two sorted lists."]
    code = chat_requests.pools(random.Random(0), bench)["code"]
    assert "Write a Rust function that merges two sorted lists." not in code
    assert "Write a Python function that merges two sorted lists." not in code  # 4 of 5 content words shared
    assert "Write a Rust function that counts the vowels in a string." in code
    assert "Write a Rust function that merges two sorted lists." in chat_requests.pools(random.Random(0), [])["code"]
