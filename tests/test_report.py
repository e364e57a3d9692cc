import json

import numpy as np
import pytest

from sashelpers.core import profiles
from sashelpers.core import report


def test_record_writes_everything_a_reader_needs(results_tmp):
    path = report.record("00_test", {"mae": {"sphere": {"radius": np.float32(0.25)}}, "acc": 0.99},
                         paper={"acc": 0.97}, timings={"train_s": 1.5}, profile="quick")
    rec = json.loads(path.read_text())
    assert path == results_tmp / "00_test.json"
    assert rec["profile"] == "quick" and rec["metrics"]["acc"] == 0.99
    assert rec["metrics"]["mae"]["sphere"]["radius"] == pytest.approx(0.25)
    assert rec["paper"] == {"acc": 0.97} and rec["timings_s"] == {"train_s": 1.5}
    assert {"numpy", "python"} <= set(rec["versions"]) and rec["hardware"]["node_cpus"] >= 1
    assert rec["date"][:2] == "20"


def test_record_rejects_empty_metrics(results_tmp):
    with pytest.raises(ValueError, match="metrics"):
        report.record("00_test", {})


def test_scorecard_lists_every_metric_and_paper_value(results_tmp, tmp_path):
    report.record("01_a", {"mae": {"sphere": {"radius": 0.2}}}, paper={"mae": {"sphere": {"radius": 0.395}}},
                  profile="standard")
    report.record("02_b", {"mape": 1.5}, profile="quick")
    page = tmp_path / "scorecard.md"
    page.write_text("# Scorecard\n\n<!-- SCORECARD -->\n")
    out = report.render_scorecard(page, tmp_path / "out.md", results_tmp)
    text = out.read_text()
    assert "## 01_a" in text and "Profile `standard`" in text
    assert "| `mae.sphere.radius` | 0.395 | 0.2 |" in text
    assert "| `mape` | — | 1.5 |" in text and "Profile `quick`" in text
    assert "<!-- SCORECARD -->" not in text


def test_scorecard_without_records_says_so(tmp_path):
    assert "No results recorded" in report.scorecard_table([])


def test_profiles():
    assert profiles.current_profile("QUICK") == "quick"
    with pytest.raises(ValueError, match="profile"):
        profiles.current_profile("huge")
    table = {"quick": {"n": 1}, "standard": {"n": 2}, "paper": {"n": 3}}
    with pytest.raises(ValueError, match="paper"):
        profiles.pick({"quick": {}, "standard": {}})
    a = profiles.pick(table, "quick")
    a["n"] = -1
    assert profiles.pick(table, "quick")["n"] == 1  # a copy, not the table
    assert profiles.pick(table, "paper")["n"] == 3


def test_archive_round_trip(results_tmp, tmp_path):
    report.record("00_test", {"acc": 0.5}, profile="paper")
    out = report.archive("00_test", dest=tmp_path / "records")
    assert out.name == "00_test@paper.json"
    assert report.archived("00_test", "paper", tmp_path / "records")["metrics"] == {"acc": 0.5}
    assert report.archived("00_test", "standard", tmp_path / "records") is None
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        report.archive("01_missing", dest=tmp_path / "records")
    with pytest.raises(ValueError, match="profile"):
        report.archived("00_test", "huge", tmp_path / "records")


def test_scorecard_shows_the_archived_paper_run_beside_the_current_one(results_tmp, tmp_path):
    heads = [report.Headline("acc", "accuracy", "%", 100, (">=", 0.6), 0.97, "Table 1")]
    report.record("00_test", {"acc": 0.5}, headlines=heads, profile="paper")
    report.archive("00_test", dest=tmp_path / "records")
    report.record("00_test", {"acc": 0.75}, headlines=heads, profile="quick")
    report.record("01_only_archived", {"acc": 0.1}, headlines=heads, profile="paper")
    report.archive("01_only_archived", dest=tmp_path / "records")
    (results_tmp / "01_only_archived.json").unlink()
    page = tmp_path / "page.md"
    page.write_text("# Scorecard\n\n" + report.SCORECARD_MARKER + "\n")
    text = report.render_scorecard(page, tmp_path / "out.md", archive=tmp_path / "records").read_text()
    assert "| accuracy | ≥ 60% | 97% (Table 1) | 75% ✓ | 50% ✗ |" in text
    assert "## 01_only_archived (archived `paper` run)" in text and "| 10% ✗ |" in text
    assert text.count("## 00_test") == 1


def test_headlines_are_checked_and_rendered(results_tmp):
    with pytest.raises(ValueError, match="goal"):
        report.Headline("a", "A", goal=("~", 1))
    with pytest.raises(ValueError, match="key"):
        report.Headline("", "A")
    heads = (report.Headline("mae.sphere", "sphere MAE", "nm", goal=("<=", 0.2), paper=0.395, source="Fig. 3"),
             report.Headline("case", "case study", goal=("in", 3.9, 4.1), paper=(4.004, 0.025)))
    with pytest.raises(ValueError, match="not found"):
        report.record("00_test", {"mae": {"cyl": 1.0}, "case": [4.0, 0.1]}, headlines=heads, profile="quick")
    path = report.record("00_test", {"mae": {"sphere": 0.25}, "case": [4.05, 0.1]}, headlines=heads,
                         profile="quick")
    rec = json.loads(path.read_text())
    assert rec["command"].startswith("SASHELPERS_PROFILE=quick") and "notebooks/00_test.ipynb" in rec["command"]
    assert "git_commit" in rec
    table = report.paper_vs_run(path, {})
    assert "| sphere MAE | ≤ 0.2 nm | 0.395 nm (Fig. 3) | 0.25 nm ✗ |" in table
    assert "| case study | 3.9 – 4.1 | 4.004 ± 0.025 | 4.05 ± 0.1 ✓ |" in table
    assert "Goals missed in this run: sphere MAE." in table


def test_experiment_cli_runs_and_records(tmp_path, monkeypatch, capsys):
    from sashelpers.core import report

    monkeypatch.setattr(report, "experiment_path", lambda study, name, profile: tmp_path / f"{study[:2]}_{name}@{profile}.json")
    calls = []

    def run(what, profile, spans):
        calls.append((what, profile, spans))
        return {"r2": 0.5}

    argv = ["curve", "--profile", "quick", "--spans", "2,4"]
    assert report.experiment_cli("05_x", "pkg.mod", ("curve", "large"), run, argv,
                                 options=(("--spans", {"default": "2,3,4"}),)) == 0
    assert calls == [("curve", "quick", "2,4")]
    rec = json.loads((tmp_path / "05_curve@quick.json").read_text())
    assert rec["command"] == "python -m pkg.mod curve --profile quick --spans 2,4" and rec["results"] == {"r2": 0.5}
    assert str(tmp_path / "05_curve@quick.json") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.experiment_cli("05_x", "pkg.mod", ("curve",), run, ["nope"])
