"""jbdiff studio: the app's answers to bad uploads, and the whole app driven in headless Chromium.

The browser test uploads the example seed, continues it on the tiny random bundle, checks the
player's audio and the spectrogram, sends the take to the Repaint tab and repaints a region of
it, remixes a text file renamed ``.wav``, stops a long job while a second browser tab waits in
the queue, and runs again. It saves a screenshot of each state in the folder it prints
(``JBDIFF_ARTEFACTS`` or pytest's temporary folder).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from jbdiff import cli
from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.errors import JbdiffError
from jbdiff.pipeline import Pipeline
from jbdiff.studio import Studio, describe_upload, serve
from tests.conftest import ROOT

SEED = ROOT / "examples" / "knolls_seed.ogg"
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas 3 deprecations inside gradio


@pytest.fixture(scope="module")
def bad_uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The uploads people get wrong: a text file renamed .wav, an empty file, 6 channels at 96 kHz, 30 minutes."""
    folder = tmp_path_factory.mktemp("uploads")
    text = folder / "notes.wav"
    text.write_text("these are my lyrics, not audio\n" * 20)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    surround = folder / "surround.wav"
    sf.write(surround, np.random.default_rng(0).uniform(-0.3, 0.3, (96000 // 2, 6)).astype(np.float32), 96000, subtype="PCM_16")
    long = folder / "long.flac"
    with sf.SoundFile(long, "w", 8000, 1, "PCM_16") as handle:
        for _ in range(30):
            handle.write(np.zeros(8000 * 60, dtype=np.int16))
    return {"text": text, "empty": empty, "surround": surround, "long": long}


def _cli_error(path: Path, tmp_path: Path) -> str:
    """What ``jbdiff continue`` says about ``path`` (without the ``jbdiff: error:`` prefix)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = cli.main(["continue", str(path), "--seconds", "1", "-o", str(tmp_path / "out.wav")])
    assert status == cli.EXIT_ERROR
    return stderr.getvalue().strip().removeprefix("jbdiff: error: ")


def _finish(studio: Studio, call: Callable[..., Any], uploads: list[str | None]) -> dict[str, Any]:
    """The last update of one job (the generator the page streams)."""
    updates = list(studio.job("Continue", call, lambda: studio.pipe.settings, uploads, "test"))
    return updates[-1]


def test_bad_uploads_get_the_clis_answer(tiny_bundle: Path, bad_uploads: dict[str, Path], tmp_path: Path) -> None:
    studio = Studio(Pipeline.from_pretrained(tiny_bundle, device="cpu"), tmp_path)
    for kind in ("text", "empty"):
        path = bad_uploads[kind]
        said = _cli_error(path, tmp_path).replace(str(path), path.name)
        assert said.startswith(f"{path.name}: ") and "\n" not in said
        assert describe_upload(str(path)) == f"⚠️ {said}"

        def call(settings: Any, out: Path, report: Any, path: Path = path) -> Any:
            from jbdiff.studio import _load_input

            return studio.pipe.continue_(_load_input(str(path), "seed"), SAMPLE_RATE, 0.3, settings=settings, out=out, progress=report)

        assert _finish(studio, call, [str(path)])["status"] == f"⚠️ {said}"
    assert describe_upload(str(bad_uploads["surround"])) == "surround.wav: 0:00.5, 6 channels, 96000 Hz"
    assert describe_upload(str(bad_uploads["long"])) == "long.flac: 30:00.0, mono, 8000 Hz"
    assert list(tmp_path.glob("*.wav")) == [] and list(tmp_path.glob(".*")) == []


def test_a_six_channel_96k_upload_is_continued_as_the_cli_would(tiny_bundle: Path, bad_uploads: dict[str, Path], tmp_path: Path) -> None:
    from jbdiff.studio import _load_input

    studio = Studio(Pipeline.from_pretrained(tiny_bundle, device="cpu"), tmp_path)
    path = str(bad_uploads["surround"])

    def call(settings: Any, out: Path, report: Any) -> Any:
        return studio.pipe.continue_(_load_input(path, "seed"), SAMPLE_RATE, 0.3, settings=settings, out=out, progress=report)

    result = _finish(studio, call, [path])["result"]
    take = result["takes"][0]
    assert sf.info(take["audio"]).duration == pytest.approx(0.3, abs=0.01)
    assert [Path(f).suffix for f in take["files"]] == [".wav", ".flac", ".ogg", ".json"]
    assert Path(take["image"]).stat().st_size > 10_000


def test_the_command_listens_on_this_machine_only_by_default() -> None:
    args = cli.build_parser().parse_args(["studio"])
    assert (args.host, args.port, args.model, args.func) == ("127.0.0.1", 7860, None, cli.cmd_studio)


def test_the_advanced_panel_round_trips_every_setting(tiny_bundle: Path, tmp_path: Path) -> None:
    studio = Studio(Pipeline.from_pretrained(tiny_bundle, device="cpu"), tmp_path)
    values = studio.settings_values(None)
    assert studio.settings_from(values) == studio.pipe.settings
    values[6] = not values[6]  # the loudness checkbox
    values[7] = 0.35  # the seed echo slider
    values[8] = not values[8]  # the tone checkbox
    assert studio.settings_from(values) == studio.pipe.settings.replace(match_loudness=values[6], seed_echo=0.35, match_tone=values[8])


@pytest.mark.parametrize("move", ["Extend", "Loop", "Morph"])
def test_extend_loop_and_morph_deliver_a_take(tiny_bundle: Path, tmp_path: Path, move: str) -> None:
    from jbdiff.studio import _load_input

    studio = Studio(Pipeline.from_pretrained(tiny_bundle, device="cpu"), tmp_path)

    def call(settings: Any, out: Path, report: Any) -> Any:
        audio = _load_input(str(SEED), "input")[:, : SAMPLE_RATE]
        if move == "Extend":
            return studio.pipe.extend(audio, SAMPLE_RATE, before=0.5, settings=settings, out=out, progress=report)
        if move == "Morph":
            later = _load_input(str(SEED), "input")[:, SAMPLE_RATE : 2 * SAMPLE_RATE]
            return studio.pipe.morph(audio, later, SAMPLE_RATE, 2, settings=settings, out=out, progress=report)
        return studio.pipe.loop(audio, SAMPLE_RATE, 0.8, settings=settings, out=out, progress=report)

    updates = list(studio.job(move, call, lambda: studio.pipe.settings.replace(window_multiplier=1), [str(SEED)], "test"))
    assert any("<progress" in u.get("progress", "") for u in updates)  # the editing moves report progress too
    result = updates[-1]["result"]
    duration = sf.info(result["takes"][0]["audio"]).duration
    if move == "Morph":  # two clips of one pass each: one window of the tiny prior, 128 frames of hop 128
        assert result["manifest"]["clips"] == 2 and duration == pytest.approx(2 * 128 * 128 / SAMPLE_RATE, abs=0.01)
    else:
        assert duration == pytest.approx(1.5 if move == "Extend" else 0.8, abs=0.01)


def test_a_busy_port_is_one_sentence(tiny_bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(JbdiffError, match=rf"^cannot listen on 127.0.0.1:{port} \(in use"):
            serve(str(tiny_bundle), port=port, device="cpu", outputs=str(tmp_path), block=False)


# ---- the browser ---------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
browser_only = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run installs them)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def app_url(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    outputs = tmp_path_factory.mktemp("studio_outputs")
    app, url = serve(str(tiny_bundle), port=_free_port(), device="cpu", outputs=str(outputs), block=False)
    yield url, outputs
    app.close()


def _chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1700",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='jbdiff-chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


class Page:
    """One browser tab on the app, with the few gestures the test needs."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver, self.shots = driver, shots

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                found = check()
                if found:
                    return found
            time.sleep(0.25)
        self.shot(f"timeout-{what.replace(' ', '-')}")
        raise AssertionError(f"timed out waiting for {what}; page status: {self.text('#jb-status')!r}")

    def text(self, css: str) -> str:
        found = self.all(css)
        return str(found[0].text) if found else ""

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def click(self, css: str) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", self.find(css))

    def upload(self, component: str, path: Path) -> None:
        """Clear the audio input ``component`` if it holds a file, then upload ``path`` into it."""
        for button in self.all(f"{component} button[aria-label='Clear']"):
            self.driver.execute_script("arguments[0].click();", button)
        self.wait("the file input", lambda: self.all(f"{component} input[type=file]"), 10)[0].send_keys(str(path))

    def set_number(self, component: str, value: float) -> None:
        box = self.find(f"{component} input[type=number]")
        box.clear()
        box.send_keys(str(value), "\t")

    def tab(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        for button in self.driver.find_elements(By.CSS_SELECTOR, "#jb-moves button[role=tab]"):
            if button.text.strip() == name:
                button.click()
                return
        raise AssertionError(f"no tab {name}")

    def audio_seconds(self, component: str) -> float:
        """The duration of the file behind ``component``'s download link, decoded by the browser."""
        link = self.find(f"{component} a[download]").get_attribute("href")
        script = (
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(r => r.arrayBuffer())"
            ".then(b => new OfflineAudioContext(2, 44100, 44100).decodeAudioData(b))"
            ".then(a => done(a.duration)).catch(e => done(-1));"
        )
        return float(self.driver.execute_async_script(script, link))


@browser_only
def test_the_studio_in_a_real_browser(app_url: tuple[str, Path], bad_uploads: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, outputs = app_url
    shots = Path(os.environ.get("JBDIFF_ARTEFACTS", tempfile.mkdtemp(prefix="jbdiff-artefacts-"))) / "studio"
    shots.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nstudio screenshots: {shots}")
    first, second = _chrome(), _chrome()
    try:
        first.set_script_timeout(30)
        page = Page(first, shots)
        first.get(url)
        page.wait("the page", lambda: page.all("#jb-run-continue"))
        page.shot("01-start")

        # upload the example seed and continue it by one second
        page.upload("#jb-continue-input", SEED)
        page.wait("the seed's description", lambda: "knolls_seed.ogg: 0:10.0, stereo, 44100 Hz" in page.text("#jb-tab-continue"))
        page.set_number("#jb-continue-seconds", 1)
        page.click("#jb-run-continue")
        page.wait("the progress bars", lambda: page.all("#jb-progress progress"))
        page.shot("02-progress")
        page.wait("the player", lambda: page.all("#jb-take1-audio a[download]"))
        assert page.audio_seconds("#jb-take1-audio") == pytest.approx(11.0, abs=0.05)  # the 10 s seed + 1 s
        page.wait("the spectrogram", lambda: first.execute_script(
            "const i = document.querySelector('#jb-take1-image img'); return i && i.complete && i.naturalWidth > 500;"))
        names = sorted(p.suffix for p in outputs.iterdir())  # one take: its audio in three formats, spectrogram, manifest
        assert names == [".flac", ".json", ".ogg", ".png", ".wav"]
        page.shot("03-result")

        # "use as input" fills the Repaint tab and shows it; repaint half a second of the continuation
        page.click("#jb-target input[value='Repaint']")
        page.click("#jb-take1-use")
        page.wait("the take in the Repaint tab", lambda: "0:11" in page.text("#jb-repaint-input"))
        assert page.find("#jb-repaint-input").is_displayed() and not page.find("#jb-continue-input").is_displayed()
        page.shot("04-use-as-input")
        page.set_number("#jb-repaint-start", 10)
        page.set_number("#jb-repaint-end", 10.5)
        page.click("#jb-run-repaint")
        page.wait("the repainted take", lambda: list(outputs.glob("*-repaint.ogg")) and "repaint" in page.find("#jb-take1-audio a[download]").get_attribute("download"))
        assert page.audio_seconds("#jb-take1-audio") == pytest.approx(11.0, abs=0.05)
        page.shot("05-repainted")

        # a text file renamed .wav, to remix: one sentence, in the page, the CLI's
        page.tab("Remix")
        page.upload("#jb-remix-input", bad_uploads["text"])
        sentence = "notes.wav: not an audio file libsndfile can read"
        page.wait("the upload's error", lambda: sentence in page.text("#jb-tab-remix"))
        page.click("#jb-run-remix")
        page.wait("the run's error", lambda: page.text("#jb-status").startswith(f"⚠️ {sentence}"))
        assert "Traceback" not in first.page_source and len(page.text("#jb-status").splitlines()) == 1
        page.shot("06-bad-upload")

        # a long job; a second browser tab queues behind it; Stop; the queued job and a new one run
        page.tab("Continue")
        page.wait("the seed, still there", lambda: "knolls_seed.ogg" in page.text("#jb-tab-continue"))
        page.set_number("#jb-continue-seconds", 120)
        before = set(outputs.iterdir())
        page.click("#jb-run-continue")
        page.wait("the long job's progress", lambda: page.all("#jb-progress progress"))
        other = Page(second, shots)
        second.get(url)
        other.wait("the second page", lambda: other.all("#jb-moves button[role=tab]"))
        other.tab("Generate")
        other.wait("the Generate tab", lambda: other.all("#jb-run-generate"))
        other.set_number("#jb-generate-seconds", 1)
        other.click("#jb-run-generate")
        other.wait("the queue position", lambda: "queue" in other.text("#jb-progress").lower())
        other.shot("07-second-tab-queued")
        page.click("#jb-stop")
        page.wait("the stop", lambda: "Stopped; nothing was written." in page.text("#jb-status"))
        page.shot("08-stopped")
        other.wait("the queued job's take", lambda: other.all("#jb-take1-audio a[download]"))
        other.shot("09-second-tab-done")
        created = set(outputs.iterdir()) - before
        assert created and all("-generate." in p.name for p in created), "the stopped job wrote something"
        assert not [p for p in outputs.iterdir() if p.name.startswith(".")], "a staging file was left behind"
        page.set_number("#jb-continue-seconds", 1)
        page.click("#jb-run-continue")
        page.wait("a take after the stop", lambda: len(list(outputs.glob("*-continue.png"))) == 2 and page.all("#jb-take1-audio a[download]"))
        page.wait("the new take in the page", lambda: len(page.text("#jb-progress")) == 0)
        page.shot("10-usable-after-stop")

        external = [u for u in _requests(first) + _requests(second) if u.startswith("http") and not u.startswith(url)]
        assert external == [], f"the page reached outside the machine: {external[:5]}"
    finally:
        first.quit()
        second.quit()


def _requests(driver: Any) -> list[str]:
    import json

    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            sent.append(message["params"]["request"]["url"])
    return sent
