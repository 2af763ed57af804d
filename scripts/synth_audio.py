"""Write a folder of synthesised music-like clips: ``python scripts/synth_audio.py OUT [--files N] [--seconds S]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from jbdiff.core.audio import save_audio
from jbdiff.core.synth import synth_music


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.files):
        save_audio(args.out / f"synth_{i:02d}.wav", synth_music(args.seconds, seed=i))
    print(f"wrote {args.files} file(s) of {args.seconds:g} s to {args.out}")


if __name__ == "__main__":
    main()
