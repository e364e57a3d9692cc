import json

import numpy as np
import pytest

from sashelpers import profiles, report


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
    with pytest.raises(ValueError, match="study"):
        profiles.get("99_nothing")
    a = profiles.get("00_scattering_primer", "quick")
    a["n"] = -1
    assert profiles.get("00_scattering_primer", "quick")["n"] > 0  # a copy, not the table


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


def test_scorecard_adds_archived_runs_of_other_profiles(results_tmp, tmp_path):
    report.record("00_test", {"acc": 0.5}, profile="paper")
    report.archive("00_test", dest=tmp_path / "records")
    report.record("00_test", {"acc": 0.25}, profile="quick")
    page = tmp_path / "page.md"
    page.write_text("# Scorecard\n\n" + report.SCORECARD_MARKER + "\n")
    text = report.render_scorecard(page, tmp_path / "out.md", archive=tmp_path / "records").read_text()
    assert "## 00_test\n" in text and "## 00_test (archived `paper` run)" in text
    assert text.index("0.25") < text.index("0.5 |")
    report.record("00_test", {"acc": 0.75}, profile="paper")  # the current run wins over the archive
    text = report.render_scorecard(page, tmp_path / "out.md", archive=tmp_path / "records").read_text()
    assert "archived" not in text and "0.75" in text
