"""Split the Wesnoth 1.16 music into the demo bundle's training and held-out folders.

Usage: python scripts/demo_split.py MUSIC_DIR OUT_DIR [--excerpt-seconds S]

Writes ``OUT_DIR/train_audio/`` and ``OUT_DIR/heldout_audio/`` as folders of symlinks to the
installed Ogg files (nothing is copied), and ``OUT_DIR/split.json`` listing both. Rerunning it
rebuilds both folders from scratch, so the split always matches this file.

``OUT_DIR/level_audio/`` is what the latent levels are trained on (``jbdiff encode`` input):
with ``--excerpt-seconds 0`` symlinks to every training track; with S > 0 (the CPU demo) an
S-second mono excerpt from the middle of every training track, as float WAV (peaks above 1.0
kept), so every track is represented while encoding costs a fraction of the whole set.
Existing excerpts of the same length are kept as they are (a rerun does not re-encode them).

Left out entirely: the short stingers (victory, victory2, defeat, defeat2, silence; 5-21 s of
fanfare or silence, not music to continue). Held out for evaluation, never trained on: the five
tracks in HELDOUT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STINGERS = ("victory", "victory2", "defeat", "defeat2", "silence")
HELDOUT = ("the_deep_path", "traveling_minstrels", "knolls", "elvish-theme", "weight_of_revenge")


def _link_folder(folder: Path, music_dir: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name in names:
        (folder / name).symlink_to(music_dir / name)


def _excerpts(folder: Path, music_dir: Path, names: list[str], seconds: float, fresh: bool) -> None:
    from jbdiff.core.audio import audio_info, load_audio, save_audio

    folder.mkdir(parents=True, exist_ok=True)
    wanted = {Path(name).stem + ".wav" for name in names}
    for old in folder.iterdir():
        if fresh or old.is_symlink() or old.name not in wanted:
            old.unlink()
    for name in names:
        target = folder / (Path(name).stem + ".wav")
        if target.exists():
            continue
        duration = audio_info(music_dir / name).duration
        offset = max(0.0, (duration - seconds) / 2)
        save_audio(target, load_audio(music_dir / name, channels=1, offset=offset, duration=min(seconds, duration)))


def split(music_dir: Path, out_dir: Path, excerpt_seconds: float = 0.0) -> dict[str, list[str]]:
    tracks = sorted(music_dir.glob("*.ogg"))
    names = {p.stem for p in tracks}
    missing = [n for n in STINGERS + HELDOUT if n not in names]
    if missing:
        raise SystemExit(f"demo_split: {music_dir} lacks {', '.join(missing)}; is wesnoth-1.16-music installed?")
    groups: dict[str, list[str]] = {"train_audio": [], "heldout_audio": [], "left_out": []}
    for path in tracks:
        group = "left_out" if path.stem in STINGERS else "heldout_audio" if path.stem in HELDOUT else "train_audio"
        groups[group].append(path.name)
    for group in ("train_audio", "heldout_audio"):
        _link_folder(out_dir / group, music_dir, groups[group])
    record = out_dir / "split.json"
    previous = json.loads(record.read_text()).get("excerpt_seconds") if record.is_file() else None
    if excerpt_seconds > 0:
        _excerpts(out_dir / "level_audio", music_dir, groups["train_audio"], excerpt_seconds, previous != excerpt_seconds)
    else:
        _link_folder(out_dir / "level_audio", music_dir, groups["train_audio"])
    summary = {"source": str(music_dir), "excerpt_seconds": excerpt_seconds, **groups}
    record.write_text(json.dumps(summary, indent=2) + "\n")
    return groups


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Split the Wesnoth music for the demo bundle.")
    parser.add_argument("music_dir", help="the installed wesnoth-1.16-music folder")
    parser.add_argument("out_dir", help="where train_audio/, heldout_audio/ and level_audio/ go")
    parser.add_argument("--excerpt-seconds", type=float, default=0.0,
                        help="level_audio/ holds excerpts this long (0: whole training tracks)")
    args = parser.parse_args(argv)
    groups = split(Path(args.music_dir).resolve(), Path(args.out_dir), args.excerpt_seconds)
    print(
        f"{len(groups['train_audio'])} training, {len(groups['heldout_audio'])} held-out, "
        f"{len(groups['left_out'])} left-out tracks under {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
