"""Put the repository root on sys.path, so tests import model, tree, transfer, decode, train."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
