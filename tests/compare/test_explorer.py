"""The NERO explorer page, opened from ``file://`` in a real headless Chromium: clicks change the linked views."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import eqmonitor.compare as cmp
from eqmonitor.cli import EXIT_OK, main
from eqmonitor.explorer.data import run_view

CHROMIUM = "/usr/bin/chromium"

# the screen position of point `i` of the source named `src` in the figure named `fig` (Bokeh's own scales)
_WHERE = """([fig, src, i]) => {
  const doc = Bokeh.documents[0], model = doc.get_model_by_name(fig), data = doc.get_model_by_name(src).data;
  const view = Object.values(Bokeh.index)[0].owner.find_one(model);
  const box = view.canvas_view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(data.x[i]), box.top + view.frame.y_scale.compute(data.y[i])];
}"""
_READ = """() => {
  const doc = Bokeh.documents[0], get = (name) => doc.get_model_by_name(name);
  return {sample: get("state").data.sample[0], element: get("state").data.element[0],
          individual: Array.from(get("ind_0_pts").data.v), image: Array.from(get("img_0").data.image[0]),
          probs: Array.from(get("probs_0").data.p), info: get("info_0").text,
          other: Array.from(get("ind_1_pts").data.v)};
}"""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"!!! SKIPPED: no {CHROMIUM}: run scripts/install_browser.sh .venv (apt-get install -y chromium)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EQMONITOR_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_clicks_select_a_sample_and_an_element(two_runs, browser, tmp_path):
    root, monitors = two_runs
    page_file = tmp_path / "nero.html"
    args = ["report", str(root / "none"), str(root / "c4"), "--symmetry", "rotation", "--out", str(page_file), "-q"]
    assert main(args) == EXIT_OK
    html = page_file.read_text()
    assert "cdn.bokeh.org" not in html and "<script src=" not in html  # inline resources: works offline
    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto(page_file.as_uri())
    page.wait_for_function(
        "window.Bokeh && Bokeh.documents.length > 0 && Bokeh.index && Object.keys(Bokeh.index).length"
    )
    page.wait_for_timeout(500)
    out = _artefacts(tmp_path)
    page.screenshot(path=str(out / "explorer_start.png"), full_page=True)
    before = page.evaluate(_READ)
    run = cmp.load_run(root / "none")
    view = run_view(run, "rotation")
    np.testing.assert_allclose(before["individual"], view.errors[-1, 0], rtol=1e-6)  # sample 0 at the last check
    assert before["sample"] == 0 and before["element"] == 0

    # a click on a point of the PCA scatter selects that sample, in both runs
    target = int(np.argmax(np.abs(view.errors[-1] - view.errors[-1, 0]).sum(1)))
    page.mouse.click(*page.evaluate(_WHERE, ["dr_fig_0", "dr_0", target]))
    page.wait_for_timeout(300)
    picked = page.evaluate(_READ)
    assert picked["sample"] == target and f"sample {target} " in picked["info"]
    np.testing.assert_allclose(picked["individual"], view.errors[-1, target], rtol=1e-6)
    np.testing.assert_allclose(
        picked["other"], run_view(cmp.load_run(root / "c4"), "rotation").errors[-1, target], rtol=1e-6
    )
    assert picked["image"] != before["image"]
    page.screenshot(path=str(out / "explorer_sample.png"), full_page=True)

    # a click on an element of the individual plot selects that transform: the input turns, the detail follows
    element = 3
    page.mouse.click(*page.evaluate(_WHERE, ["ind_0_fig", "ind_0_pts", element]))
    page.wait_for_timeout(300)
    moved = page.evaluate(_READ)
    assert moved["element"] == element and moved["image"] != picked["image"]
    expected = np.flip(view.images[target, element], 0).reshape(-1)
    np.testing.assert_array_equal(np.asarray(moved["image"]), expected)
    np.testing.assert_allclose(moved["probs"], view.probs[-1, target, element], rtol=1e-6)
    assert moved["probs"] != picked["probs"]
    page.screenshot(path=str(out / "explorer_element.png"), full_page=True)
    assert errors == []


def test_the_input_view_is_the_probe_moved_by_the_element(two_runs):
    import torch

    root, monitors = two_runs
    view = run_view(cmp.load_run(root / "c4"), "c4")
    x = monitors["c4"].probe.x[:, 0]
    quarter = torch.rot90(x, -1, (-2, -1))  # element k=1 of Cyclic(4)
    corr = np.corrcoef(view.images[:, 1].reshape(len(x), -1)[0], quarter[0].flatten().numpy())[0, 1]
    assert view.layout == "circle" and corr > 0.999
    assert view.consensus.shape == (view.probs.shape[0], 32, 10)
    np.testing.assert_allclose(view.consensus.sum(-1), 1.0, atol=5e-3)


def test_old_records_give_a_page_without_inputs_or_probabilities(tmp_path):
    from compare_specs import OLD_RECORDS

    shutil.copytree(OLD_RECORDS, tmp_path / "old")
    assert main(["report", str(tmp_path / "old"), "--out", str(tmp_path / "old.html"), "-q"]) == EXIT_OK
    view = run_view(cmp.load_run(tmp_path / "old"), "c4")
    assert view.images is None and view.probs is None and view.layout == "finite"


def test_a_consensus_run_shows_its_errors_against_the_consensus(browser, tmp_path):
    from compare_specs import fit_run

    monitor = fit_run(tmp_path / "cons", "none", reference="consensus")
    page_file = tmp_path / "cons.html"
    assert main(["report", str(tmp_path / "cons"), "--symmetry", "c4", "--out", str(page_file), "-q"]) == EXIT_OK
    view = run_view(cmp.load_run(tmp_path / "cons"), "c4")
    last = monitor.latest["c4"].consensus.errors.cpu().numpy()
    np.testing.assert_allclose(view.consensus_errors[-1], last, rtol=1e-6)
    page = browser.new_page(viewport={"width": 1000, "height": 1300})
    page.goto(page_file.as_uri())
    page.wait_for_function(
        "window.Bokeh && Bokeh.documents.length > 0 && Bokeh.index && Object.keys(Bokeh.index).length"
    )
    page.wait_for_timeout(500)
    shown = page.evaluate("""() => {
      const get = (name) => Bokeh.documents[0].get_model_by_name(name);
      const lines = get("ind_0_lines").data, agg = get("agg_0_lines").data;
      return {names: Array.from(lines.name), ys: lines.ys.map((y) => Array.from(y)), agg: Array.from(agg.name),
              info: get("info_0").text};
    }""")
    page.screenshot(path=str(_artefacts(tmp_path) / "explorer_consensus.png"), full_page=True)
    assert shown["names"] == ["sample 0, against the consensus", "sample 0"]
    assert "all, against the consensus" in shown["agg"] and "against the consensus" in shown["info"]
    order = [int(i) for i in sorted(range(view.k), key=lambda i: (view.ex[i], i))]
    polar_y = (view.consensus_errors[-1, 0] * -np.sin(view.ex))[order]  # the page's polar curve, closed
    np.testing.assert_allclose(shown["ys"][0][: view.k], polar_y, rtol=1e-5, atol=1e-9)


def test_two_runs_side_by_side_share_the_radii_of_their_polar_plots(two_runs, browser, tmp_path):
    """Runs side by side are compared by eye: the plain and the augmented run's aggregate and individual polar plots
    have one radial scale (that of the run that needs the larger one), not one each."""
    root, _ = two_runs
    page_file = tmp_path / "pair.html"
    assert main(["report", str(root / "none"), str(root / "c4"), "--symmetry", "c4", "--out", str(page_file),
                 "-q"]) == EXIT_OK  # fmt: skip
    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    page.goto(page_file.as_uri())
    page.wait_for_function(
        "window.Bokeh && Bokeh.documents.length > 0 && Bokeh.index && Object.keys(Bokeh.index).length"
    )
    ends = page.evaluate("""() => {
      const get = (name) => Bokeh.documents[0].get_model_by_name(name);
      return ["agg_0_fig", "agg_1_fig", "ind_0_fig", "ind_1_fig"].map((n) => get(n).x_range.end);
    }""")
    from eqmonitor.explorer.page import _radii

    needed = [_radii(run_view(cmp.load_run(root / name), "c4")) for name in ("none", "c4")]
    assert needed[0] != needed[1]  # the runs alone would get different scales
    agg, ind = (1.25 * max(r[i] for r in needed) for i in (0, 1))
    assert ends == pytest.approx([agg, agg, ind, ind])
    page.close()
