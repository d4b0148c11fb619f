"""``dvc plots show`` draws every chart with no network (issue 19), as headless Chromium shows it.

The project's plots (dvc.yaml's ``plots:`` and the stages' plots, over the committed histories and
figures) are copied into a fresh repository with the project's DVC config; ``python -m
study.plots_offline``'s template is written there, and ``dvc plots show`` renders the page. Chromium,
with every host name unresolvable, loads it: each interactive chart must hold a drawn Vega view, each
image must load, their places in the screenshot must not be blank, and no chart may report a failure.
DVC's default page, whose libraries come from a CDN, fails this. A page whose chart library breaks
must say so in every chart's place.

Needs Chromium: ``make test`` (``.ci/with-chromium``) installs Debian's when run as root with apt;
elsewhere the tests skip, except under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ruamel.yaml import YAML

from study.plots_offline import write_template

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
FAILURE = re.compile(r'<p class="plot-error">(Chart not rendered[^<]*)')
# Once every chart is drawn (or has failed), this test-only script writes where each chart and image
# is on the page, for the screenshot's check.
LAYOUT_SCRIPT = """<script>
  (function (ids) {
    var tries = 0;
    var timer = setInterval(function () {
      var settled = ids.every(function (id) {
        return document.getElementById(id).querySelector(".marks, .plot-error");
      });
      if (!settled && ++tries < 50) return;  // 5 s: within Chromium's virtual-time budget
      clearInterval(timer);
      var boxes = {}, images = [];
      function box(element) {
        var r = element.getBoundingClientRect();
        return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY];
      }
      ids.forEach(function (id) {
        var marks = document.getElementById(id).querySelector(".marks");
        boxes[id] = marks ? box(marks) : null;
      });
      document.querySelectorAll("img").forEach(function (img) {
        var loaded = img.complete && img.naturalWidth > 0;
        images.push({src: img.getAttribute("src"), loaded: loaded, box: box(img)});
      });
      var pre = document.createElement("pre");
      pre.id = "test-layout";
      pre.textContent = JSON.stringify({charts: boxes, images: images});
      document.body.appendChild(pre);
    }, 100);
  })(IDS);
</script>
"""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs Chromium (`chromium` on PATH) to render dvc plots show's page headless; "
    "`make test` installs Debian's chromium when run as root with apt-get",
)


def stage_plots(dvc_yaml: dict) -> list[str]:
    """The stages' plots: each a file, a chart of its own (an image is shown as it is)."""
    outs = [out for stage in dvc_yaml["stages"].values() for out in stage.get("plots", [])]
    return [name for out in outs for name in ([out] if isinstance(out, str) else out)]


def plot_sources(dvc_yaml: dict) -> set[str]:
    """Every file a plot of ``dvc.yaml`` reads: the stages' plots and the top-level plots' ``y`` files."""
    files = set(stage_plots(dvc_yaml))
    for definition in dvc_yaml.get("plots", []):
        ((_, plot),) = definition.items()
        files |= set(plot["y"]) if isinstance(plot.get("y"), dict) else set()
    return files


def isolated_env(scratch: Path) -> dict[str, str]:
    """No user or system DVC config (an html_template or out_dir of theirs would change the page)."""
    for folder in ("dvc-global", "dvc-system"):
        (scratch / folder).mkdir()
    return dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(scratch / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(scratch / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(scratch / "dvc-site-cache"),
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The index.html of ``dvc plots show`` in a copy of the project's plots, with the offline template."""
    repo = tmp_path_factory.mktemp("plots-repo")
    dvc_yaml = YAML(typ="safe").load(ROOT / "dvc.yaml")
    for name in {"dvc.yaml", ".dvc/config"} | plot_sources(dvc_yaml):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    write_template(repo)
    out = tmp_path_factory.mktemp("plots-page")
    env = isolated_env(tmp_path_factory.mktemp("plots-env"))
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc), "plots", "show", "--out", str(out)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "index.html"


def chromium(page: Path, scratch: Path) -> tuple[str, Image.Image]:
    """The DOM and a 1200x6000 screenshot of ``page`` after up to 10 s (virtual) of loading, offline."""
    if CHROMIUM is None:
        pytest.fail("no Chromium under CI=true: .ci/with-chromium (make test) installs it")
    screenshot = scratch / "page.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # no network at all
        f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=10000", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--window-size=1200,6000", f"--screenshot={screenshot}",
        "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and screenshot.exists(), done.stderr[-2000:]
    return done.stdout, Image.open(screenshot).convert("RGB")


def chart_ids(html: str) -> list[str]:
    return re.findall(r"vegaEmbed\('#([^']+)'", html)


def drawn(screenshot: Image.Image, box: list[float]) -> tuple[int, float]:
    """Distinct colours and the fraction of non-white pixels in ``box`` (cut to the screenshot)."""
    left, top, right, bottom = (round(v) for v in box)
    crop = screenshot.crop((left, top, min(right, screenshot.width), min(bottom, screenshot.height)))
    pixels = np.asarray(crop).reshape(-1, 3).astype(np.int32)
    colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
    return len(colours), float((pixels.min(axis=1) < 240).mean())


def test_every_chart_of_dvc_plots_show_renders_offline(page: Path, tmp_path: Path) -> None:
    html = page.read_text()
    ids = chart_ids(html)
    dvc_yaml = YAML(typ="safe").load(ROOT / "dvc.yaml")
    images = [name for name in stage_plots(dvc_yaml) if name.endswith(IMAGE_SUFFIXES)]
    assert len(ids) == len(dvc_yaml.get("plots", [])) + len(stage_plots(dvc_yaml)) - len(images), ids
    instrumented = tmp_path / "index.html"
    shutil.copytree(page.parent / "static", tmp_path / "static")
    cut = html.rindex("</body>")
    instrumented.write_text(html[:cut] + LAYOUT_SCRIPT.replace("IDS", json.dumps(ids)) + html[cut:])

    dom, screenshot = chromium(instrumented, tmp_path)

    assert not FAILURE.findall(dom), FAILURE.findall(dom)
    for chart in ids:
        opening = re.search(rf'<div id="{re.escape(chart)}"[^>]*>', dom)
        assert opening and "vega-embed" in opening[0], f"{chart}: no Vega view ({opening})"
    written = re.search(r'<pre id="test-layout">(.*?)</pre>', dom, re.DOTALL)
    assert written, "the page's layout was not written: its scripts did not run"
    layout = json.loads(written[1])
    assert len(layout["images"]) == len(images), layout["images"]
    assert all(image["loaded"] for image in layout["images"]), layout["images"]
    boxes = {**layout["charts"], **{image["src"]: image["box"] for image in layout["images"]}}
    for name, box in boxes.items():
        assert box is not None, f"{name}: no drawn marks"
        assert box[2] - box[0] > 100 and box[3] - box[1] > 100 and box[3] <= screenshot.height, (name, box)
        colours, inked = drawn(screenshot, box)
        assert colours >= 10 and inked > 0.02, f"{name}: blank on screen ({colours} colours, {inked:.1%} ink)"


def test_a_chart_library_that_fails_is_said_in_every_charts_place(page: Path, tmp_path: Path) -> None:
    html = page.read_text()
    assert "unhandledrejection" in html, "not study.plots_offline's page: nothing reports a failed chart"
    start = html.index("<script>\n", html.index("unhandledrejection")) + len("<script>\n")
    end = html.index("\n</script>", start)
    broken = tmp_path / "index.html"
    broken.write_text(html[:start] + 'throw new Error("no Vega here");' + html[end:])

    dom, _ = chromium(broken, tmp_path)

    for chart in chart_ids(html):
        inside = re.search(rf'<div id="{re.escape(chart)}"[^>]*>\s*<p class="plot-error">([^<]*)', dom)
        assert inside and "vegaEmbed is not defined" in inside[1], chart
    assert "Chart not rendered: Uncaught Error: no Vega here" in FAILURE.findall(dom)
