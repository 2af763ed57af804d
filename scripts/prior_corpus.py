"""Gather the level-2 base prior's corpus: free game music from Debian packages, as symlinks.

Usage: python scripts/prior_corpus.py OUT_DIR [--install]

Writes ``OUT_DIR/prior_audio/`` (training), ``OUT_DIR/prior_val_audio/`` (validation: files kept
out of training, for ``jbdiff train level2 --val-latents``) and ``OUT_DIR/prior_corpus.json``
(every package, its music licence, the files and minutes in each group). The demo's five
held-out Wesnoth tracks (``demo_split.HELDOUT``) and its stingers are in neither group.
Each file is named ``<set>_<path inside the music folder, '/' as '_'>``. Packages that are
not installed are skipped (``--install`` installs them with apt-get first). Rerunning rebuilds
both folders from scratch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_split import HELDOUT, STINGERS

# set name -> (Debian package, music folder, licence of the music per debian/copyright)
SETS: dict[str, tuple[str, str, str]] = {
    "wesnoth": ("wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music", "GPL-2+"),
    "pushover": ("pushover-data", "/usr/share/pushover/themes", "GPL-3+"),
    "frozenbubble": ("frozen-bubble-data", "/usr/share/games/frozen-bubble/snd", "GPL-2"),
    "warzone": ("warzone2100-music", "/usr/share/games/warzone2100/music", "GPL-2+"),
    "supertux": ("supertux-data", "/usr/share/games/supertux2/music", "GPL-2+"),
    "hedgewars": ("hedgewars-data", "/usr/share/games/hedgewars/Data/Music", "GPL-2"),
    "freedroidrpg": ("freedroidrpg-data", "/usr/share/freedroidrpg/data/sound/music", "GPL-2+"),
    "flare": ("flare-game", "/usr/share/games/flare/mods/fantasycore/music", "CC-BY-SA-3.0+"),
    "etr": ("extremetuxracer-data", "/usr/share/games/etr/music", "GPL-2+"),
    "xmoto": ("xmoto-data", "/usr/share/games/xmoto/Textures/Musics", "GPL-2+"),
}
# files kept out of training for validation (the corpus names above)
VALIDATION = (
    "wesnoth_northerners.ogg",
    "wesnoth_sad.ogg",
    "pushover_greek.ogg",
    "warzone_albums_aftermath_soundtrack_track22.opus",
    "flare_cave_theme.ogg",
)
SUFFIXES = (".ogg", ".opus")


def _music(name: str, folder: Path) -> dict[str, Path]:
    """Corpus name -> file for one set's music (frozen-bubble: only its *zik* tracks)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if name == "frozenbubble":
        files = [p for p in files if "zik" in p.name]
    if name == "wesnoth":
        files = [p for p in files if p.stem not in HELDOUT + STINGERS]
    return {f"{name}_{p.relative_to(folder).as_posix().replace('/', '_')}": p for p in files}


def gather(out_dir: Path) -> dict[str, object]:
    """Build both folders; returns what ``prior_corpus.json`` records."""
    from jbdiff.core.audio import audio_info

    groups = {"prior_audio": out_dir / "prior_audio", "prior_val_audio": out_dir / "prior_val_audio"}
    for folder in groups.values():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
    record: dict[str, object] = {"sets": {}, "validation": list(VALIDATION)}
    for name, (package, music_dir, licence) in SETS.items():
        folder = Path(music_dir)
        if not folder.is_dir():
            print(f"prior_corpus: {package} is not installed; skipping {name}", file=sys.stderr)
            continue
        minutes = {"prior_audio": 0.0, "prior_val_audio": 0.0}
        counts = {"prior_audio": 0, "prior_val_audio": 0}
        for corpus_name, path in _music(name, folder).items():
            group = "prior_val_audio" if corpus_name in VALIDATION else "prior_audio"
            (groups[group] / corpus_name).symlink_to(path)
            minutes[group] += audio_info(path).duration / 60
            counts[group] += 1
        record["sets"][name] = {  # type: ignore[index]
            "package": package, "licence": licence, "files": counts, "minutes": {k: round(v, 1) for k, v in minutes.items()}
        }
    (out_dir / "prior_corpus.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Gather the base prior's corpus from Debian game music.")
    parser.add_argument("out_dir")
    parser.add_argument("--install", action="store_true", help="apt-get install the packages first")
    args = parser.parse_args(argv)
    if args.install:
        packages = [package for package, _, _ in SETS.values()]
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], check=True)
    record = gather(Path(args.out_dir))
    for name, info in record["sets"].items():  # type: ignore[union-attr]
        print(f"{name:13s} {info['package']:22s} {info['licence']:34s} {info['files']['prior_audio']:3d} files "
              f"{info['minutes']['prior_audio']:6.1f} min (+{info['files']['prior_val_audio']} validation)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
