"""The web page (`unmix serve`) end to end: a real server process on a free loopback port over a small trained
model, driven over HTTP (limits, uploads, cancellation, a burst of requests) and in a real headless browser
(Debian's chromium driven by playwright; those tests skip, saying why, where either is missing).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install -e '.[web]'")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
UNMIX = str(Path(sys.executable).with_name("unmix"))
# `unmix serve` through the CLI's own entry point, with the command module imported whether or not it is
# registered in unmix.cli.commands yet; test_default_bind_is_loopback runs the installed `unmix` itself.
SERVE = [sys.executable, "-c", "import unmix.cli.serve_cmd; from unmix.cli.entry import main; main()", "serve"]


# -- a small trained model and a server over it ----------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny class-conditional digits model after 30 training steps (seconds on one thread)."""
    import unmix

    out = tmp_path_factory.mktemp("web") / "runs" / "digits"
    unmix.train("digits", steps=30, out=str(out), progress=False, sample_every=10**6, checkpoint_every=10**6,
                cond="label", batch_size=32, threads=1,
                net={"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "num_res_blocks": 1})
    return out


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def get(self, path: str, headers=None, timeout: float = 30):
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def post(self, path: str, body, content_type="application/json", timeout: float = 60):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def events(self, path: str, body, timeout: float = 120) -> list[tuple[str, dict]]:
        """A streamed request's server-sent events, in order (body: an object sent as JSON, or raw bytes)."""
        raw = isinstance(body, bytes)
        req = urllib.request.Request(self.url + path.lstrip("/"), data=body if raw else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/octet-stream" if raw else "application/json"})
        out, name = [], None
        with urllib.request.urlopen(req, timeout=timeout) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    out.append((name, json.loads(line[6:])))
        return out

    def queue(self) -> dict:
        return json.loads(self.get("/api/queue")[1])


def start_server(command: list[str], args: list[str], workdir: Path, timeout: float = 90) -> Server:
    """Start `unmix serve` and wait until its printed URL answers HTTP 200."""
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([*command, *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"serving (http://\S+/)", log.read_text())
        if m:
            server = Server(proc, m.group(1), log)
            try:
                if server.get("/", timeout=5)[0] == 200:
                    return server
            except OSError:
                pass
        if proc.poll() is not None:
            raise AssertionError(f"unmix serve exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"unmix serve did not answer within {timeout} s: {log.read_text()}")


def stop_server(server: Server) -> int:
    server.proc.send_signal(signal.SIGINT)
    try:
        return server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise AssertionError("unmix serve did not stop on Ctrl-C within 20 s") from None


@pytest.fixture(scope="module")
def server(run_dir):
    s = start_server(SERVE, [str(run_dir), "--port", "0", "--threads", "1", "--max-nfe", "300"], run_dir.parent.parent)
    yield s
    code = stop_server(s)
    assert code in (0, 130), s.log.read_text()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()


def pixels(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def png_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def digit(server: Server, index: int = 0) -> str:
    status, body, _ = server.get(f"/api/dataset?model=digits&index={index}")
    assert status == 200, body
    return json.loads(body)["image"]


# -- HTTP ------------------------------------------------------------------------------------------------------
def test_page_lists_the_model_and_loads_nothing_from_elsewhere(server):
    status, body, headers = server.get("/")
    assert status == 200
    html = body.decode()
    for tab in ("ink", "generate", "inpaint", "edit"):
        assert f'id="tab-{tab}"' in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # every script, style and picture is local
    assert "connect-src 'self'" in headers["content-security-policy"]
    info = json.loads(server.get("/api/models")[1])
    [m] = info["models"]
    assert (m["name"], m["shape"], m["classes"]) == ("digits", [1, 8, 8], [str(i) for i in range(10)])


def test_generate_streams_every_call_and_the_printed_cli_line_draws_the_same_grid(server, tmp_path):
    ev = server.events("/api/generate/run", {"model": "digits", "nfe": 7, "count": 6, "seed": 11, "label": "3",
                                              "guidance": 2, "sampler": "heun"})
    names = [n for n, _ in ev]
    assert names[0] == "start" and names[-1] == "done", names
    frames = [p for n, p in ev if n == "frame"]
    assert len(frames) == 7  # Heun with 7 NFE: one frame per denoiser call
    assert [f["frame"] for f in frames] == list(range(1, 8))
    sigmas = [f["sigma"] for f in frames]
    from unmix.samplers import default_sigmas

    budget = default_sigmas("heun", 7, dim=64)  # a trained model walks the budget's grid (inside its range)
    assert sigmas[0] == pytest.approx(float(budget[0])) and sigmas[-1] < 0.1
    assert len({f["noisy"] for f in frames}) == len({f["guess"] for f in frames}) == 7  # each frame a new picture
    done = ev[-1][1]
    assert done["cli"].endswith("--n 6 --seed 11 --sampler heun --nfe 7 --label 3 --guidance 2.0")
    # the page's command, run as printed (into a folder of our choosing), draws exactly the page's grid
    argv = shlex.split(done["cli"])
    assert argv[:2] == ["unmix", "sample"]
    subprocess.run([UNMIX, *argv[1:], "--out", str(tmp_path / "cli"), "--no-singles", "--threads", "1"], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    cli_grid = np.asarray(Image.open(tmp_path / "cli" / "grid.png"))
    assert np.array_equal(pixels(done["image"]), cli_grid)


def test_ink_forward_frames_get_noisier_and_run_back_starts_from_the_shown_frame(server):
    image = digit(server, 5)
    forward = json.loads(server.post("/api/ink/forward", {"model": "digits", "image": image, "frames": 12,
                                                          "seed": 3})[1])
    assert forward["sigmas"][0] == 0 and len(forward["frames"]) == 12
    first = pixels(forward["frames"][0]).astype(float)
    dist = [np.abs(pixels(f).astype(float) - first).mean() for f in forward["frames"]]
    assert dist[0] == 0 and dist[-1] > 30 and dist[-1] > dist[3]  # the image dissolves into noise
    ev = server.events("/api/ink/reverse", {"model": "digits", "image": image, "frames": 12, "seed": 3, "index": 8,
                                            "nfe": 5, "sampler": "euler"})
    frames = [p for n, p in ev if n == "frame"]
    assert ev[-1][0] == "done" and len(frames) == 5
    assert frames[0]["sigma"] == pytest.approx(forward["sigmas"][8])
    assert frames[0]["noisy"] == forward["frames"][8]  # the run back starts from the very frame the slider shows


def half_mask() -> Image.Image:
    """Fill in the right half of an 8x8 digit."""
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (4, 0, 8, 8))
    return mask


def test_inpaint_and_edit_stream_and_finish(server):
    image = digit(server, 7)
    ev = server.events("/api/inpaint/run", {"model": "digits", "image": image, "mask": png_url(half_mask()),
                                            "method": "guided", "nfe": 5, "count": 3, "weight": 2})
    assert ev[-1][0] == "done" and sum(n == "frame" for n, _ in ev) == 5
    grid = pixels(ev[-1][1]["image"])  # three 8x8 completions, two a row, drawn 8x larger, 2 grey pixels apart
    for i in range(3):
        top, left = 2 + 66 * (i // 2), 2 + 66 * (i % 2)
        tile = grid[top: top + 64, left: left + 64][::8, ::8]
        assert np.array_equal(tile[:, :4], pixels(image)[:, :4])  # the known half comes back exactly
    assert "--method guided" in ev[-1][1]["cli"] and "--weight 2.0" in ev[-1][1]["cli"]
    ev = server.events("/api/edit/run", {"model": "digits", "image": image, "strength": 0.6, "nfe": 6, "count": 2})
    assert ev[-1][0] == "done" and 1 <= sum(n == "frame" for n, _ in ev) <= 6
    assert "--strength 0.6" in ev[-1][1]["cli"]


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()[:300]


def _huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels (a decompression bomb's shape), with no pixel data."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(server):
    bad = {
        "text": (b"hello, not a picture", "not an image"),
        "empty": (b"", "empty"),
        "truncated": (_truncated_png(), "damaged or truncated"),
        "wide": (_huge_png(9000, 10), "9000x10 pixels; the limit is 8192 pixels a side and 16 million"),
        "bomb": (_huge_png(100_000, 100_000), "too large"),
        "too many bytes": (b"\x89PNG" + bytes(9 * 2**20), "limit of 8 MiB"),
        "pdf": (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not an image"),
    }
    for what, (data, expected) in bad.items():
        status, body = server.post("/api/upload?model=digits", data, "application/octet-stream")
        assert status == 400, (what, status, body)
        assert expected in json.loads(body)["error"], (what, body)
    # odd modes are converted to the model's grey 8x8, not refused
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    odd = {"CMYK jpeg": _encoded(rgb.convert("CMYK"), "JPEG"), "16-bit png": _encoded(rgb.convert("I;16"), "PNG"),
           "palette+alpha png": _encoded(rgb.convert("RGBA").convert("P"), "PNG"),
           "1-bit bmp": _encoded(rgb.convert("1"), "BMP")}
    for what, data in odd.items():
        status, body = server.post("/api/upload?model=digits", data, "application/octet-stream")
        assert status == 200, (what, body)
        assert pixels(json.loads(body)["image"]).shape == (8, 8), what
    # images sent back at the wrong size or not as PNG are refused too
    for image, expected in ((png_url(Image.new("L", (9, 8))), "9x8 pixels"), ("data:image/png;base64,!!", "PNG")):
        status, body = server.post("/api/edit/run", {"model": "digits", "image": image})
        assert status == 400 and expected in json.loads(body)["error"], body
    assert server.get("/")[0] == 200


def test_requests_are_bounded(server):
    image = digit(server)
    cases = [
        ("/api/generate/run", {"model": "digits", "nfe": 301}, "nfe must be a whole number from 1 to 300"),
        ("/api/generate/run", {"model": "digits", "count": 65}, "count must be a whole number from 1 to 64"),
        ("/api/generate/run", {"model": "nope"}, "unknown model 'nope'"),
        ("/api/generate/run", {"model": "digits", "sampler": "magic"}, "unknown sampler 'magic'"),
        ("/api/inpaint/run", {"model": "digits", "image": image, "mask": png_url(half_mask()),
                              "method": "guided_repaint", "nfe": 300, "repeats": 20}, "limit is 1000"),
        ("/api/ink/forward", {"model": "digits", "image": image, "frames": 1000}, "frames must be a whole number"),
    ]
    for path, body, expected in cases:
        status, answer = server.post(path, body)
        assert status == 400 and expected in json.loads(answer)["error"], (path, answer)
    status, answer = server.post("/api/generate/run", b'{"model": "digits"}', content_type="text/plain")
    assert status == 400 and b"JSON" in answer  # a cross-site form cannot start work
    status, answer = server.post("/api/generate/run", b"x" * (3 * 2**20), content_type="application/json")
    assert status == 400 and b"limit" in answer
    assert server.get("/", headers={"Host": "attacker.example"})[0] == 400  # DNS rebinding finds nothing


def test_closing_a_stream_frees_its_place_at_once(server):
    body = {"model": "digits", "image": digit(server), "mask": png_url(half_mask()), "method": "guided_repaint",
            "nfe": 100, "repeats": 5, "count": 64}
    req = urllib.request.Request(server.url + "api/inpaint/run", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    r = urllib.request.urlopen(req, timeout=60)
    elapsed = []
    for raw in r:
        line = raw.decode()
        if line.startswith("data: ") and '"frame"' in line:
            elapsed.append(json.loads(line[6:])["elapsed"])
            if len(elapsed) == 3:
                break
    r.close()
    closed = time.monotonic()
    full = (elapsed[2] - elapsed[1]) * 500  # about 500 calls at the rate of the last one
    while server.queue()["running"] and time.monotonic() - closed < 30:
        time.sleep(0.05)
    freed = time.monotonic() - closed
    assert server.queue()["running"] == 0
    assert freed < max(2.0, full / 5), (freed, full)


def test_a_burst_of_twenty_requests_queues_and_completes(server):
    import psutil

    proc = psutil.Process(server.proc.pid)
    rss0 = proc.memory_info().rss
    results: list = [None] * 20

    def ask(i):
        try:
            results[i] = server.events("/api/generate/run", {"model": "digits", "nfe": 4, "count": 4, "seed": i},
                                       timeout=180)
        except Exception as e:  # noqa: BLE001  reported by the assertions below
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    page_times, peak, busy_seen = [], rss0, 0
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        assert server.get("/")[0] == 200
        page_times.append(time.monotonic() - t0)
        q = server.queue()
        busy_seen += q["running"] > 0 and q["waiting"] > 0
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.1)
    for t in threads:
        t.join()
    for r in results:
        assert isinstance(r, list), r
        names = [n for n, _ in r]
        assert names[-1] == "done" and "error" not in names and names.count("frame") == 4, names
    assert sum("queued" in [n for n, _ in r] for r in results) >= 10  # one at a time: the rest waited their turn
    assert busy_seen >= 1 and len(page_times) >= 3 and max(page_times) < 5, page_times  # the page answered meanwhile
    assert peak - rss0 < 300 * 2**20, (rss0, peak)
    assert server.queue() | {"completed": 0} == {"running": 0, "waiting": 0, "jobs": 1, "completed": 0}


def test_default_bind_is_loopback(run_dir, tmp_path):
    """The installed `unmix serve` listens on 127.0.0.1 when no --host is given, and stops on Ctrl-C."""
    import psutil

    s = start_server([UNMIX, "serve"], [str(run_dir), "--port", "0"], tmp_path)
    try:
        assert s.url.startswith("http://127.0.0.1:")
        listening = [c.laddr for c in psutil.Process(s.proc.pid).net_connections() if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    finally:
        assert stop_server(s) in (0, 130)


def test_a_model_with_its_own_sampling_is_sampled_that_way_by_default(run_dir, tmp_path):
    """A checkpoint that names its sampler and step count (a distilled model's) gets them when the request does
    not say, and the page is told them (it sets its sampler and NFE fields from them)."""
    import shutil

    own = tmp_path / "runs" / "fast"
    shutil.copytree(sorted(run_dir.glob("checkpoint-*"))[-1], own)
    config = json.loads((own / "config.json").read_text())
    (own / "config.json").write_text(json.dumps({**config, "sampling": {"sampler": "euler", "nfe": 4}}))
    s = start_server(SERVE, [str(own), "--port", "0", "--threads", "1"], tmp_path)
    try:
        [m] = json.loads(s.get("/api/models")[1])["models"]
        assert m["sampling"] == {"sampler": "euler", "nfe": 4}
        ev = s.events("/api/generate/run", {"model": "fast", "count": 2, "seed": 1})
        assert [n for n, _ in ev].count("frame") == 4 and ev[-1][0] == "done", ev[-1]
        assert "--sampler euler --nfe 4" in ev[-1][1]["cli"]
        ev = s.events("/api/generate/run", {"model": "fast", "count": 2, "seed": 1, "sampler": "heun", "nfe": 7})
        assert [n for n, _ in ev].count("frame") == 7 and "--sampler heun --nfe 7" in ev[-1][1]["cli"]
    finally:
        assert stop_server(s) in (0, 130)


def test_a_missing_web_extra_is_one_line(monkeypatch, capsys):
    import unmix.cli.serve_cmd  # noqa: F401  registers the command
    import unmix.web
    from unmix.cli.app import run_app

    real = unmix.web.find_spec
    monkeypatch.setattr(unmix.web, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    assert run_app(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the web page needs uvicorn, from the web extra: pip install -e '.[web]'"]


def test_no_models_is_one_clear_error(tmp_path, run_dir):
    from unmix.errors import UnmixError
    from unmix.web.models import discover

    with pytest.raises(UnmixError, match=r"^no image models found under .*runs/; train one \(`unmix train`\) or name a "
                                         r"run folder: unmix serve RUN$"):
        discover(None, tmp_path / "runs")
    entries, notes = discover(None, run_dir.parent)  # found under a runs folder, named after the run
    assert [e.name for e in entries] == ["digits"] and notes == []
    with pytest.raises(UnmixError, match="does not exist"):
        discover([str(tmp_path / "nowhere")])


# -- in a real browser -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (pip)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        yield page
        browser.close()
        assert not errors, errors


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    """Screenshots land here (printed, so a CI log says where)."""
    folder = Path(os.environ.get("UNMIX_TEST_ARTEFACTS") or tmp_path_factory.mktemp("web_screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"web screenshots in {folder}")
    return folder


RECORD = """sel => { window.seen = new Set(); const img = document.querySelector(sel);
  new MutationObserver(() => window.seen.add(img.src)).observe(img, {attributes: true, attributeFilter: ['src']}); }"""


def test_browser_ink_in_water(page, artefacts):
    page.click(".tab-button[data-tab=ink]")
    page.wait_for_selector("#ink-forward[src^='data:']", timeout=30000)
    before = page.get_attribute("#ink-forward", "src")
    box = page.locator("#ink-slider").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)  # a user drags the slider
    assert int(page.input_value("#ink-slider")) > 10
    assert page.get_attribute("#ink-forward", "src") != before
    assert page.inner_text("#ink-sigma").startswith("σ = ")
    page.evaluate(RECORD, "#ink-run img.noisy")
    page.fill("#ink-run input[name=nfe]", "12")
    page.click("#ink-run [data-run]")
    page.wait_for_selector("#ink-run [data-live][data-done='1']", timeout=60000)
    assert int(page.get_attribute("#ink-run [data-live]", "data-frames")) >= 10  # frame after frame reached the page
    assert page.evaluate("window.seen.size") >= 3  # and changed the picture (near sigma 0, PNGs can repeat)
    page.screenshot(path=str(artefacts / "ink.png"), full_page=True)


def test_browser_generate(page, artefacts, server):
    page.click(".tab-button[data-tab=generate]")
    page.select_option("#gen-run select[name=label]", "7")
    page.fill("#gen-run input[name=nfe]", "12")
    page.fill("#gen-run input[name=count]", "9")
    page.evaluate(RECORD, "#gen-run img.guess")
    page.click("#gen-run [data-run]")
    page.wait_for_selector("#gen-run [data-live][data-done='1']", timeout=60000)
    assert page.evaluate("window.seen.size") >= 10
    result = pixels(page.get_attribute("#gen-result", "src"))
    assert result.shape == (3 * 66 + 2, 3 * 66 + 2) and result.std() > 20  # a 3x3 grid of 64-pixel tiles, not blank
    assert page.get_attribute("#gen-download", "download").endswith(".png")
    default = json.loads(server.get("/api/models")[1])["default_sampler"]
    assert page.inner_text("#gen-cli").endswith(f"--n 9 --seed 0 --sampler {default} --nfe 12 --label 7")
    page.screenshot(path=str(artefacts / "generate.png"), full_page=True)


def test_browser_inpaint_with_a_painted_mask(page, artefacts):
    page.click(".tab-button[data-tab=inpaint]")
    page.wait_for_selector("#inp-image[src^='data:']")
    box = page.locator("#inp-canvas").bounding_box()
    for x in (180, 230):  # two strokes down the right side, with the default brush (a fifth of the width)
        page.mouse.move(box["x"] + x, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + x, box["y"] + 250, steps=12)
        page.mouse.up()
    page.select_option("#inp-run select[name=method]", "replace")
    page.fill("#inp-run input[name=nfe]", "8")
    page.fill("#inp-run input[name=count]", "4")
    page.click("#inp-run [data-run]")
    page.wait_for_selector("#inp-run [data-live][data-done='1']", timeout=60000)
    mask = pixels(page.get_attribute("#inp-dl-mask", "href"))
    assert mask[:, :4].max() == 0 and mask[:, 5:].min() == 255  # the strokes, on the right, at the model's size
    assert page.get_attribute("#inp-result", "src").startswith("data:image/png")
    assert "--method replace" in page.inner_text("#inp-cli")
    page.screenshot(path=str(artefacts / "inpaint.png"), full_page=True)


def test_browser_edit_and_a_bad_upload(page, artefacts, tmp_path):
    page.click(".tab-button[data-tab=edit]")
    page.fill("#edit-run input[name=nfe]", "6")
    page.click("#edit-run [data-run]")
    page.wait_for_selector("#edit-run [data-live][data-done='1']", timeout=60000)
    assert "--strength 0.5" in page.inner_text("#edit-cli")
    bad = tmp_path / "photo.png"
    bad.write_bytes(_truncated_png())
    page.set_input_files("#edit-picker input[type=file]", str(bad))
    page.wait_for_selector("#edit-picker .msg.error")
    assert "damaged or truncated" in page.inner_text("#edit-picker .msg")
    page.screenshot(path=str(artefacts / "edit.png"), full_page=True)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (50, 70), dtype=np.uint8)).save(good)
    page.set_input_files("#edit-picker input[type=file]", str(good))
    page.wait_for_selector("#edit-picker .msg:not(.error)")
    assert "uploaded good.png" in page.inner_text("#edit-picker .msg")



# -- product photos: a server over an image model and a product model --------------------------------------------
@pytest.fixture(scope="module")
def product_server(run_dir):
    """`unmix serve` over ./runs holding the digits model, a tiny product model (3 training steps) and a tiny model
    of backgrounds (2 steps) to draw scenes."""
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    runs = run_dir.parent
    tiny = {"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "patch_size": 2}
    start(TrainConfig(data="product", size=32, steps=3, batch_size=4, out=str(runs / "product"), threads=1,
                      net=tiny, sample_every=1000, nfe=3)).train(progress=False)
    start(TrainConfig(data="backgrounds", size=16, steps=2, batch_size=4, out=str(runs / "backgrounds"), threads=1,
                      net=tiny, sample_every=1000, nfe=3)).train(progress=False)
    s = start_server(SERVE, ["--port", "0", "--threads", "1"], runs.parent)
    yield s
    assert stop_server(s) in (0, 130), s.log.read_text()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()


def _photo_jpeg() -> bytes:
    """A held-out busy photo, enlarged to a non-square 50x40 JPEG."""
    from unmix.data.products import ProductTriples

    busy = ProductTriples(32, "clutter", "test", seed=0).triples([0]).busy[0]
    img = Image.fromarray(((busy.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).resize((50, 40))
    return _encoded(img, "JPEG")


def test_product_tab_streams_and_its_cli_line_makes_the_same_picture(product_server, tmp_path):
    info = json.loads(product_server.get("/api/models")[1])
    assert {m["name"]: m["task"] for m in info["models"]} == {"digits": "image", "product": "product",
                                                               "backgrounds": "image"}
    photo = _photo_jpeg()
    ev = product_server.events("/api/product/run?model=product&job=clean&find=mean&seed=0", photo)
    assert len([n for n, _ in ev if n == "frame"]) == 1  # the posterior mean: one network call
    # this 3-step model's mean alpha may be empty: then the job's one line, as from the CLI
    assert ev[-1][0] == "done" or "no product found" in ev[-1][1]["error"]
    ev = product_server.events("/api/product/run?model=product&job=clean&find=sample&edges=model&nfe=5&seed=0", photo)
    assert [n for n, _ in ev][-1] == "done", ev[-1]
    frames = [p for n, p in ev if n == "frame"]
    assert len(frames) == 5  # Heun with 5 NFE (3 levels): one frame per denoiser call
    assert pixels(frames[0]["guess"]).shape[:2] == (34, 67)  # alpha | photo at 32 px, with 1-pixel gaps
    done = ev[-1][1]
    assert done["size"] == [50, 40] and pixels(done["image"]).shape == (40, 50, 3)
    argv = shlex.split(done["cli"])
    assert argv[:3] == ["unmix", "product", "clean"] and "--seed" in argv and "--nfe" in argv and "sample" in argv
    assert "--no-refine" in argv  # edges=model: the model's own alpha
    (tmp_path / "photo.png").write_bytes(photo)  # the printed command names photo.png; a JPEG under that name is read
    assert argv[3] == "runs/product"  # as found under the server's working folder
    argv[3] = str(product_server.log.parent / argv[3])
    subprocess.run([UNMIX, *argv[1:]], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   cwd=tmp_path)
    assert np.array_equal(pixels(done["image"]), np.asarray(Image.open(tmp_path / "clean.png")))


def test_product_tab_scene_keeps_the_product_pixels_and_square_is_square(product_server, run_dir):
    """The jobs that draw around the product stream both stages (finding it, then RePaint) through the page."""
    import torch

    import unmix
    from unmix.apps import product

    photo = _photo_jpeg()
    ev = product_server.events("/api/product/run?model=product&job=scene&find=sample&nfe=4&seed=0", photo)
    assert ev[-1][0] == "done", ev[-1]
    frames = [p for n, p in ev if n == "frame"]
    assert len(frames) > 33  # the alpha's 33 Heun calls, then the background's RePaint passes
    got = torch.from_numpy(pixels(ev[-1][1]["image"]).copy()).permute(2, 0, 1)
    src = torch.from_numpy(np.array(Image.open(io.BytesIO(photo)).convert("RGB"))).permute(2, 0, 1)
    model = unmix.load(run_dir.parent / "product")
    mask = product.alpha(model.denoiser, src.float() / 127.5 - 1, 32, method="sample", nfe=33, seed=0)[0] > 0.5
    assert bool(mask.any()) and torch.equal(got[:, mask], src[:, mask])
    ev = product_server.events("/api/product/run?model=product&job=square&find=sample&nfe=4&seed=0", photo)
    assert ev[-1][0] == "done", ev[-1]
    h, w, _ = pixels(ev[-1][1]["image"]).shape
    assert h == w and "unmix product square" in ev[-1][1]["cli"]


def test_product_tab_scene_drawn_by_a_backdrop_model_is_its_cli_lines_picture(product_server, run_dir, tmp_path):
    photo = _photo_jpeg()
    ev = product_server.events("/api/product/run?model=product&job=scene&find=sample&nfe=4&seed=0"
                               "&backdrop=backgrounds", photo)
    assert ev[-1][0] == "done", ev[-1]
    frames = [p for n, p in ev if n == "frame"]
    assert pixels(frames[-1]["guess"]).shape[:2] == (16, 16)  # the backdrop model's own RGB states, at its size
    done = ev[-1][1]
    argv = shlex.split(done["cli"])
    assert argv[:3] == ["unmix", "product", "scene"] and argv[argv.index("--backdrop") + 1] == "runs/backgrounds"
    (tmp_path / "photo.png").write_bytes(photo)
    argv = [str(product_server.log.parent / a) if a.startswith("runs/") else a for a in argv]
    subprocess.run([UNMIX, *argv[1:]], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   cwd=tmp_path)
    assert np.array_equal(pixels(done["image"]), np.asarray(Image.open(tmp_path / "scene.png")))
    for query, says in [("job=scene&backdrop=digits", "not a model of RGB images"),
                        ("job=clean&backdrop=backgrounds", "the clean job takes none"),
                        ("job=scene&backdrop=product", "product-photo model")]:
        status, body = product_server.post(f"/api/product/run?model=product&{query}", photo, "application/octet-stream")
        assert status == 400 and says in json.loads(body)["error"], (query, body)


def test_product_tab_refuses_the_wrong_model_and_bad_photos(product_server):
    status, body = product_server.post("/api/generate/run", {"model": "product", "nfe": 2})
    assert status == 400 and "product-photo model: use the Product photos tab" in json.loads(body)["error"]
    status, body = product_server.post("/api/product/run?model=digits", _photo_jpeg(), "application/octet-stream")
    assert status == 400 and "not a product-photo model" in json.loads(body)["error"]
    for data, says in [(_truncated_png(), "damaged or truncated"), (b"", "empty"), (b"plain text", "not an image"),
                       (_huge_png(2100, 2000), "limit")]:
        status, body = product_server.post("/api/product/run?model=product", data, "application/octet-stream")
        assert status == 400 and says in json.loads(body)["error"], (says, body)
    status, body = product_server.post("/api/product/run?model=product&job=erase", _photo_jpeg(),
                                       "application/octet-stream")
    assert status == 400 and "unknown job 'erase'" in json.loads(body)["error"]
    assert product_server.queue()["running"] == 0


def test_browser_product_photos(product_server, page, artefacts):
    """A second page in the same browser (playwright's sync API runs one at a time), on the product server."""
    page = page.context.browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(product_server.url)
    assert page.is_visible(".tab-button[data-tab=generate]") and not page.is_visible(".tab-button[data-tab=product]")
    page.select_option("#model", "product")
    assert page.is_visible("#tab-product") and not page.is_visible(".tab-button[data-tab=generate]")
    page.wait_for_selector("#product-photo[src^='data:']", timeout=30000)  # a held-out example is shown
    backdrops = page.eval_on_selector_all("#product-backdrop option", "os => os.map((o) => o.value)")
    assert backdrops == ["", "backgrounds"]  # the product model itself, or the served RGB model (digits is grey)
    page.fill("#product-run input[name=nfe]", "4")
    page.click("#product-run [data-run]")
    page.wait_for_selector("#product-run [data-live][data-done='1'], #product-run .status.error", timeout=60000)
    status = page.inner_text("#product-run .status")
    # three training steps may find no product in a photo: that is the one message the page shows then
    assert page.get_attribute("#product-run [data-live]", "data-done") == "1" or "no product found" in status
    if "no product found" not in status:
        assert pixels(page.get_attribute("#product-result", "src")).shape == (128, 128, 3)
        assert page.inner_text("#product-cli").startswith("unmix product clean ")
    page.screenshot(path=str(artefacts / "product.png"), full_page=True)
    page.close()
    assert not errors, errors
