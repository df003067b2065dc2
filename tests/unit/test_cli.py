from __future__ import annotations

from typer.testing import CliRunner

from sae_atlas.cli import app


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for command in ("harvest", "build", "info"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: sae-atlas" in result.output


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(
        app, ["harvest", "--transcripts", str(tmp_path / "none.h5"), "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 2
    assert "none.h5: no such file" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_info_describes_a_store(tmp_path):
    from tiny import random_transcripts

    from feature_store.transcripts import TranscriptWriter

    writer = TranscriptWriter.open(tmp_path / "t.h5", model="tiny", config={})
    writer.append(random_transcripts(3))
    writer.close()
    result = CliRunner().invoke(app, ["info", str(tmp_path / "t.h5")])
    assert result.exit_code == 0, result.output
    assert "sae-atlas/transcripts" in result.output and "incomplete" in result.output
    assert "transcripts: 3 rows" in result.output
