from __future__ import annotations

from typer.testing import CliRunner

from sae_atlas.cli import app


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for command in (
        "corpus",
        "harvest",
        "train",
        "label",
        "organize",
        "dynamics",
        "audit",
        "report",
        "build",
        "info",
        "query",
    ):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: sae-atlas" in result.output


def test_every_model_command_takes_profile_model_adapter_device_and_dtype():
    runner = CliRunner()
    options = ("--profile", "--model", "--adapter", "--device", "--dtype")
    for command in ("corpus", "harvest", "train", "label", "dynamics", "audit", "build"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert all(option in result.output for option in options), command
    organize = runner.invoke(app, ["organize", "--help"], env={"COLUMNS": "200"}).output
    assert "--profile" in organize and "--dtype" not in organize  # it runs no model


def test_harvest_takes_the_profile_and_its_hooks(tmp_path, monkeypatch):
    from feature_store.activations import ActivationStore
    from feature_store.transcripts import TranscriptWriter
    from sae_atlas.cli import stages
    from sae_atlas.testing import random_transcripts, tiny_handle

    tiny = tiny_handle()
    monkeypatch.setattr(stages, "model_handle", lambda model, device=None: tiny)
    writer = TranscriptWriter.open(tmp_path / "t.h5", model=tiny.model_id, config={})
    writer.append(random_transcripts(3))
    writer.finish()
    args = ["harvest", "--transcripts", str(tmp_path / "t.h5"), "--out", str(tmp_path / "a.h5")]
    for hook in ("blocks.1.hook_resid_post", "blocks.99.hook_resid_post"):
        (tmp_path / "p.yaml").write_text(f"harvest: {{hooks: [{hook}], max_len: 5}}\n")
        result = CliRunner().invoke(app, [*args, "--profile", str(tmp_path / "p.yaml")])
        if hook.startswith("blocks.99"):
            assert result.exit_code == 2 and f"unknown hook point '{hook}'" in result.output
        else:
            assert result.exit_code == 0, result.output
    store = ActivationStore(tmp_path / "a.h5")
    assert store.hooks == ("blocks.1.hook_resid_post",) and store.config["max_len"] == 5


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(
        app, ["harvest", "--transcripts", str(tmp_path / "none.h5"), "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 2
    assert "none.h5: no such file" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_adapter_is_one_line_before_any_model_loads(tmp_path):
    missing = tmp_path / "no-adapter"
    for command in (
        ["corpus", "--out", str(tmp_path / "t.h5")],
        ["build", "--out", str(tmp_path / "run")],
    ):
        result = CliRunner().invoke(app, [*command, "--adapter", str(missing)])
        assert result.exit_code == 2, result.output
        assert f"{missing}: no such adapter folder" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_info_describes_a_store(tmp_path):
    from feature_store.transcripts import TranscriptWriter
    from sae_atlas.testing import random_transcripts

    writer = TranscriptWriter.open(tmp_path / "t.h5", model="tiny", config={})
    writer.append(random_transcripts(3))
    writer.close()
    result = CliRunner().invoke(app, ["info", str(tmp_path / "t.h5")])
    assert result.exit_code == 0, result.output
    assert "sae-atlas/transcripts" in result.output and "incomplete" in result.output
    assert "transcripts: 3 rows" in result.output


def test_query_an_atlas(tmp_path):
    from test_atlas import atlas_data, write_atlas

    data = atlas_data()
    path = write_atlas(tmp_path / "atlas.h5", data)
    runner = CliRunner()
    persona = str(data["personas"]["name"][1])
    for args in (
        ["features", "--limit", "3"],
        ["feature", "2"],
        ["persona", persona],
        ["clusters"],
        ["puppeteer"],
        ["nearest", "2", "--k", "3"],
        ["info"],
    ):
        result = runner.invoke(app, ["query", str(path), *args])
        assert result.exit_code == 0, (args, result.output)
    assert persona in runner.invoke(app, ["query", str(path), "persona", persona]).output
    result = runner.invoke(app, ["query", str(path), "feature"])
    assert result.exit_code == 2 and "needs a feature index" in result.output
    result = runner.invoke(app, ["query", str(path), "colours"])
    assert result.exit_code == 2 and "unknown query 'colours'" in result.output


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    result = CliRunner().invoke(app, ["build", "--profile", "[bold]x", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown profile '[bold]x'" in result.output


def test_train_takes_device_and_dtype(tmp_path):
    import json

    from test_train import HOOK, planted_activations, write_store

    write_store(tmp_path / "a.h5", planted_activations(2_000, 16, 32, firing=0.1)[0])
    (tmp_path / "p.yaml").write_text(
        "train: {width: 32, k: 4, batch_size: 64, training_tokens: 320, skip_positions: 0}\n"
    )
    args = ["train", "--store", str(tmp_path / "a.h5"), "--out", str(tmp_path / "sae")]
    args += ["--profile", str(tmp_path / "p.yaml"), "--no-evaluate"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "sae" / HOOK / "training_card.json").read_text())
    assert (card["config"]["device"], card["config"]["dtype"]) == ("cpu", "bfloat16")


def test_a_bad_catalogue_folder_is_one_line_before_any_model_loads(tmp_path):
    instructions = tmp_path / "aa" / "instructions"
    instructions.mkdir(parents=True)
    (instructions / "bard.json").write_text('{"instruction": [{"neg": "x"}]}')
    for command in (
        ["corpus", "--out", str(tmp_path / "t.h5")],
        ["build", "--out", str(tmp_path / "run")],
    ):
        result = CliRunner().invoke(app, [*command, "--catalogue", str(tmp_path / "aa")])
        assert result.exit_code == 2, result.output
        assert "bard.json: instruction[0]: field 'pos' is missing" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_audit_refuses_a_missing_atlas_before_any_model_loads(tmp_path):
    result = CliRunner().invoke(app, ["audit", "--atlas", str(tmp_path / "none.h5")])
    assert result.exit_code == 2, result.output
    assert "none.h5: no such file" in result.output
    assert len(result.output.strip().splitlines()) == 1
