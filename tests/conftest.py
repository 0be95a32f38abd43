"""Put the repository root on sys.path, so tests import model, tree, transfer, decode, train;
and run torch on one thread, here and in the processes the tests start (notebook kernels, the
autograder, the command line): the models are tiny, and on a busy machine two threads per
process fight each other for the cores (test_decode.py: 290 s on two threads, 31 s on one)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
