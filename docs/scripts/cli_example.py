"""The command-line walk-through of cli.md: run the shipped example, print `info`, make the `plot` figure.

Runs ``meanfield run examples/post_ln_s2.toml``, ``meanfield info`` and ``meanfield plot`` through
``meanfield.cli.main`` in a temporary folder; the figure written by ``plot`` (dpi 100) is resampled
to dpi 90 and stored as an adaptive-palette PNG to stay small.

Run:  python docs/scripts/cli_example.py   (writes docs/images/cli_post_ln.png)
"""
import tempfile
from pathlib import Path

from PIL import Image

from meanfield.cli import main

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"


def run():
    with tempfile.TemporaryDirectory() as tmp:
        h5, png = Path(tmp) / "post_ln.h5", Path(tmp) / "post_ln.png"
        assert main(["run", str(ROOT / "examples" / "post_ln_s2.toml"), "--output", str(h5), "--quiet"]) == 0
        main(["info", str(h5)])
        main(["plot", str(h5), "--output", str(png)])
        img = Image.open(png).convert("RGB")
        img = img.resize((round(img.width * 0.9), round(img.height * 0.9)), Image.LANCZOS)
        img = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        IMAGES.mkdir(exist_ok=True)
        img.save(IMAGES / "cli_post_ln.png", optimize=True)
    print(f"wrote {IMAGES / 'cli_post_ln.png'} ({(IMAGES / 'cli_post_ln.png').stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    run()
