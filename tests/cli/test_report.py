"""`opwise report`: one HTML page for a factory model; a text request without a tokenizer, bad settings exit with 2."""

from opwise.cli import main
from tests.cli.test_certify import _factory


def test_report_writes_one_html_page(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", _factory(tmp_path), "--composite", "epsilon", "--patch", "3", "--eps", "0.01", "--method", "CROWN",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert all(f'id="{s}"' in page for s in ("prediction", "relevance", "verification", "certified-map", "counterexample"))
    assert "method crown," in page  # auto_LiRPA's name, resolved to ours
    assert "report written to" in capsys.readouterr().out


def test_report_text_needs_a_tokenizer(tmp_path, capsys):
    code = main(["report", _factory(tmp_path), "--text", "a dog"])
    assert code == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_report_on_bad_settings_exits_with_2(tmp_path, capsys):
    code = main(["report", _factory(tmp_path), "--eps-max", "-1", "--out", str(tmp_path / "r.html")])
    assert code == 2
    assert "eps_max" in capsys.readouterr().err


def test_report_takes_branch_and_bound(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", _factory(tmp_path), "--composite", "epsilon", "--patch", "3", "--eps", "0.01", "--method", "bab",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert "method bab," in page and "<th>crown lower bound</th>" in page
