"""`opwise report`: one HTML page for a factory model; a text request without a tokenizer, bad settings exit with 2."""

import pytest

from opwise.cli import main
from tests.cli.test_certify import _factory


@pytest.mark.parametrize("method, shown", [("CROWN", "crown"), ("bab", "bab")])  # auto_LiRPA's name resolves to ours
def test_report_writes_one_html_page(tmp_path, capsys, method, shown):
    out = tmp_path / "report.html"
    code = main(["report", _factory(tmp_path), "--composite", "epsilon", "--patch", "3", "--eps", "0.01", "--method", method,
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert all(f'id="{s}"' in page for s in ("prediction", "relevance", "verification", "certified-map", "counterexample"))
    assert f"method {shown}," in page and "<th>crown lower bound</th>" in page
    assert "report written to" in capsys.readouterr().out


def test_report_text_needs_a_tokenizer(tmp_path, capsys):
    code = main(["report", _factory(tmp_path), "--text", "a dog"])
    assert code == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_report_on_bad_settings_exits_with_2(tmp_path, capsys):
    code = main(["report", _factory(tmp_path), "--eps-max", "-1", "--out", str(tmp_path / "r.html")])
    assert code == 2
    assert "eps_max" in capsys.readouterr().err
