"""The README's walkthrough of a new experiment works as written: each of its files, copied into
a scratch package, makes an experiment that trains, decides its claim and draws its figure."""

import re
import sys

import matplotlib.pyplot as plt
import pytest
from conftest import ROOT

import digestlab.experiments
from digestlab.experiments import DEFAULT_PACKAGES
from digestlab.io import read_json
from digestlab.methods import credit
from digestlab.render import environment

# A fenced block whose first line names the file it is: `# path` or `{# path #}`.
BLOCK = re.compile(r"```(?:python|jinja|yaml)\n(?:# |\{# )(\S+?)(?: #\})?\n(.*?)```", re.S)
PACKAGE = "digestlab/experiments/in_context/"


@pytest.fixture
def walkthrough(tmp_path, monkeypatch):
    """The walkthrough's files by path, with its experiment importable from a scratch folder."""
    files = dict(BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    package = tmp_path / "experiments" / "in_context"
    package.mkdir(parents=True)
    for path, text in files.items():
        if path.startswith(PACKAGE):
            (package / path.removeprefix(PACKAGE)).write_text(text, encoding="utf-8")
    monkeypatch.setattr(digestlab.experiments, "__path__",
                        [*digestlab.experiments.__path__, str(tmp_path / "experiments")])
    yield files
    for name in [m for m in sys.modules if m.startswith("digestlab.experiments.in_context")]:
        del sys.modules[name]


def test_the_walkthrough_names_every_file_a_new_experiment_needs(walkthrough):
    assert {f"{PACKAGE}{name}" for name in
            ("__init__.py", "base_lm.py", "run.py", "figures.py", "methods.py")} <= set(walkthrough)
    assert {"digestlab/templates/experiments/in_context.md.j2",
            "tests/test_in_context.py"} <= set(walkthrough)


def test_the_walkthrough_experiment_trains_decides_and_draws(walkthrough, tmp_path):
    scope: dict = {}
    exec(walkthrough["tests/test_in_context.py"], scope)  # noqa: S102 - the README's own test
    scope["test_in_context_decides_its_claim_at_smoke_scale"](tmp_path)
    # what the README says of the outcome
    (claim,) = read_json(tmp_path / "metrics.json")["claims"]
    low, high = claim["comparisons"][0]["interval"]
    assert claim["verdict"] == "inconclusive" and low < 0 < high

    # its method, credited to its paper, with the claim's per-window values as its row
    (method,) = credit(read_json(tmp_path / "metrics.json"), DEFAULT_PACKAGES)["methods"]
    (row,) = method["rows"]
    assert method["paper"] == "2209.11895" and row["n"] == 32 and row["interval"][0] == low
    assert [c["id"] for c in method["decided"]] == ["context-lowers-loss"]

    from digestlab.experiments.in_context.figures import FIGURES

    data = read_json(tmp_path / "fig" / "data.json")
    plt.close(FIGURES["loss_by_position"](data["loss_by_position"], lambda text: text))
    for lang in ("ko", "en"):  # the page's section compiles in the site's environment
        environment(lang).from_string(walkthrough["digestlab/templates/experiments/"
                                                  "in_context.md.j2"])
