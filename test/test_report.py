"""The replay report: video (MP4 that decodes, GIF), report.html in a real headless Chromium, `replay --report`,
targets only where the user gives them (`--targets`), plot legends clear of the titles.

The browser test needs Debian's `chromium` and `chromedriver` (`make browser` installs them; .ci/run calls it).
Its screenshot is kept as a test artefact in out/test_artifacts/report.png (out/ is not committed).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.stream import StreamConfig
from molmo2_ros.core.types import Query, TaskKind
from molmo2_ros.offline.evaluation.oracle import NO_NOISE, OracleEngine
from molmo2_ros.offline.evaluation.evaluate import load_results
from molmo2_ros.offline.replay import replay
from molmo2_ros.offline.report.report import H, W, Plot, build_report, write_report
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario
from molmo2_ros.offline.evaluation.targets import FIGURES, parse_targets

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "out" / "test_artifacts"
CLI = Path(sys.executable).parent / "molmo2-ros"


@pytest.fixture(scope="module")
def oracle_report(tmp_path_factory) -> dict:
    """An 8 s default scenario replayed by the oracle with the demo's clips, and its report."""
    out = tmp_path_factory.mktemp("report")
    bag = generate_scenario(out / "scenario", seconds=8.0, width=320, height=240)
    truth = GroundTruth.load(out / "scenario" / "scenario.json")
    queries = [Query(q["id"], TaskKind(q["task"]), q["text"]) for q in truth.data["queries"]]
    summary = replay(bag, out / "replay", OracleEngine(truth, NO_NOISE), queries,
                     config=StreamConfig(buffer=BufferConfig(window_s=4.0, stride_s=1.0)), gif=False,
                     progress=False)
    paths = build_report(bag, Path(summary.results_path), out / "replay", truth=truth, title="test report",
                         settings={"model": "oracle"}, model_name="oracle", progress=False)
    return {**paths, "truth": truth}


def test_video_decodes_at_least_640_wide_and_gif_exists(oracle_report):
    cap = cv2.VideoCapture(str(oracle_report["video"]))
    frames, width = 0, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    while cap.grab():
        frames += 1
    cap.release()
    assert width >= 640 and frames == 16  # the 2 fps frames of 8 s
    from PIL import Image

    with Image.open(oracle_report["gif"]) as gif:
        assert gif.n_frames == 16 and gif.width == 640


def test_report_has_the_tables_plots_and_embedded_video(oracle_report):
    page = Path(oracle_report["report"]).read_text()
    assert 'id="headline"' in page and 'id="per-query"' in page
    assert page.count("<svg") >= 4  # pointing, count, events, latency
    assert "<th>target</th>" not in page and "met</td>" not in page  # no targets given: the figures alone
    assert 'src="data:video/mp4;base64,' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed (Debian packages): run `make browser`")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1100,1000",
                f"--user-data-dir={Path(os.environ.get('TMPDIR', '/tmp')) / f'molmo2_chromium_{os.getpid()}'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_report_in_headless_chromium(oracle_report):
    """The page loads from disk, shows both tables and a video the browser decodes, and logs no error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    try:
        browser.get(Path(oracle_report["report"]).resolve().as_uri())
        assert "test report" in browser.title
        headline = browser.find_element(By.ID, "headline")
        assert headline.is_displayed() and len(headline.find_elements(By.TAG_NAME, "tr")) == 1 + len(FIGURES)
        assert [th.text for th in headline.find_elements(By.TAG_NAME, "th")] == ["figure", "measured"]
        rows = browser.find_element(By.ID, "per-query").find_elements(By.TAG_NAME, "tr")
        assert len(rows) == 1 + len(oracle_report["truth"].queries)
        video = browser.find_element(By.ID, "demo-video")
        assert video.is_displayed()
        WebDriverWait(browser, 30).until(lambda b: b.execute_script(
            "const v = document.getElementById('demo-video'); return v.error !== null || v.readyState >= 2;"))
        state = browser.execute_script("const v = document.getElementById('demo-video');"
                                       "return [v.error && v.error.code, v.readyState, v.videoWidth, v.duration];")
        assert state[0] is None and state[1] >= 2 and state[2] >= 640 and state[3] > 7, state
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        browser.set_window_size(1100, min(int(height) + 40, 6000))
        assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        browser.quit()
        shutil.rmtree(Path(os.environ.get("TMPDIR", "/tmp")) / f"molmo2_chromium_{os.getpid()}", True)


def test_replay_report_flag_on_a_bag_without_ground_truth(tmp_path):
    """`molmo2-ros replay BAG --queries Q --report` (a user's own bag: no scenario.json) writes the report."""
    generate_scenario(tmp_path / "scn", seconds=3.0, width=320, height=240)
    bag = tmp_path / "own_bag"
    shutil.move(tmp_path / "scn" / "bag", bag)  # no scenario.json next to it
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps([{"id": "ball", "task": "point", "text": "red ball"}]))
    run = subprocess.run([str(CLI), "replay", str(bag), "--out", str(tmp_path / "out"), "--queries", str(queries),
                          "--oracle", str(tmp_path / "scn" / "scenario.json"), "--window", "2", "--stride", "1",
                          "--report", "--quiet", "--no-gif"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="per-query"' in page and 'id="headline"' not in page and "demo-video" in page
    assert (tmp_path / "out" / "demo.mp4").stat().st_size > 0


def test_targets_only_where_the_user_gives_them(oracle_report, tmp_path):
    results = load_results(Path(oracle_report["report"]).parent / "results.jsonl")
    targets = parse_targets({"point_hit_rate": 0.9, "event_f1": ">= 0.99", "event_start_error_s": 0.1})
    page = write_report(tmp_path, results, oracle_report["truth"], video=None, title="t", settings={}, stamps=[],
                        targets=targets).read_text()
    table = page[page.index('<table id="headline">'):]
    table = table[:table.index("</table>")]
    rows = {re.search(r'<td class="l">(\w+)</td>', row).group(1): row for row in table.split("<tr>")[2:]}
    assert "<th>target</th><th>status</th>" in table and list(rows) == list(FIGURES)
    assert '<td>&gt;= 0.9</td><td class="ok">met</td>' in rows["point_hit_rate"]  # the oracle points perfectly
    assert '<td>&gt;= 0.99</td><td class="miss">not met</td>' in rows["event_f1"]
    assert '<td>&lt;= 0.1</td><td class="miss">not met</td>' in rows["event_start_error_s"]  # lower is better
    assert rows["mota"].endswith("<td></td><td></td></tr>")  # no target given for it


def test_replay_report_targets_flag(tmp_path):
    """`--targets FILE` grades the report; a bad file is one argparse error before anything runs."""
    generate_scenario(tmp_path / "s", seconds=3.0, width=160, height=120)
    (tmp_path / "targets.yaml").write_text("point_hit_rate: 0.9\nevent_end_error_s: '<= 0.5'\n")
    (tmp_path / "bad.yaml").write_text("point_hit: 0.9\n")
    base = [str(CLI), "replay", str(tmp_path / "s" / "bag"), "--oracle", str(tmp_path / "s" / "scenario.json"),
            "--window", "2", "--stride", "1", "--report", "--quiet", "--no-gif"]
    bad = subprocess.run(base + ["--out", str(tmp_path / "bad"), "--targets", str(tmp_path / "bad.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "argument --targets" in bad.stderr and "unknown figure 'point_hit'" in bad.stderr
    assert not (tmp_path / "bad").exists()
    run = subprocess.run(base + ["--out", str(tmp_path / "out"), "--targets", str(tmp_path / "targets.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<th>target</th>" in page and "<td>&gt;= 0.9</td>" in page and "<td>&lt;= 0.5</td>" in page


def test_plot_legend_wraps_under_the_plot_clear_of_the_title():
    plot = Plot("pointing per window: hit rate (solid) and recall (dashed) " * 2, 20.0, 1.0, "rate")
    names = [f"a_rather_long_query_id_{i}" for i in range(8)]
    for name in names:
        plot.line([(1.0, 0.5), (2.0, 1.0)], "#123456", name)
    svg = plot.svg()
    height = int(re.search(r'<svg [^>]*height="(\d+)"', svg).group(1))
    swatches = [(float(x), float(y)) for x, y in re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="10"', svg)]
    assert len(swatches) == len(names) and len({y for _, y in swatches}) >= 2  # wrapped into rows
    assert all(y >= H and y + 10 <= height for _, y in swatches)  # under the time axis, inside the picture
    for name, (x, _) in zip(names, swatches):
        assert x + 13 + 6.5 * len(name) <= W  # each fits the width


def test_overlay_labels_never_overlap_and_stay_inside():
    """Crowded points and tracks: every drawn label box is inside the image and clear of the others."""
    import numpy as np

    from molmo2_ros.core.overlay import LabelPlacer

    img = np.zeros((240, 320, 3), np.uint8)
    placer = LabelPlacer((0, 0, 320, 240), 0.4)
    placed = sum(placer.place(img, f"#{i}", (150 + (i % 5) * 6, 100 + (i // 5) * 6), (255, 0, 0))
                 for i in range(40))
    assert 4 <= placed < 40  # crowded: some fit, the rest are left out rather than drawn over others
    boxes = placer.boxes
    assert all(0 <= b[0] and 0 <= b[1] and b[2] < 320 and b[3] < 240 for b in boxes)
    assert not any(not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])
                   for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_demo_command_writes_video_report_and_ends_with_the_json_line(tmp_path):
    """`molmo2-ros demo` (the shipped model, a short scenario): progress on stderr, the paths, then one JSON line
    whose paths exist."""
    run = subprocess.run([str(CLI), "demo", "--out", str(tmp_path / "demo"), "--seconds", "6"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("report", "video", "gif", "output_bag"):
        assert Path(last[key]).exists(), key
    assert {"point_hit_rate", "point_recall", "absence_correct", "count_exact", "mota", "event_f1"} <= last.keys()
    assert "report: " in run.stdout and "video: " in run.stdout
    assert "%|" in run.stderr  # the video's progress bar (the replay's own bar is on stderr too)
