"""The README's generated fragments agree with the code they come from."""

import re
from pathlib import Path

from trt_restore.cli import main
from trt_restore.pipelines import PIPELINES, task_defaults_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_task_defaults_are_the_methods_tables():
    text = README.read_text(encoding="utf-8")
    fragment = re.search(r"<!-- task-defaults: begin -->\n(.*?)<!-- task-defaults: end -->", text, re.S)
    assert fragment, "README.md lost its task-defaults markers"
    assert fragment.group(1) == task_defaults_markdown(), (
        "README.md's per-task defaults differ from the methods' TASK_DEFAULTS; paste "
        "`python -c 'from trt_restore.pipelines import task_defaults_markdown as t; print(t(), end=\"\")'`"
    )


def test_readme_bundled_settings_are_the_model_sets():
    from trt_restore.export.model_sets import load_model_set
    from trt_restore.pipelines.base import settings_text

    text = README.read_text(encoding="utf-8")
    fragment = re.search(r"<!-- bundled-settings: begin -->\n(.*?)<!-- bundled-settings: end -->", text, re.S)
    assert fragment, "README.md lost its bundled-settings markers"
    rows = [f"| `{method}` | {settings_text(settings)} |" for method, settings in load_model_set("bundled").settings.items()]
    assert rows and fragment.group(1) == "\n".join(["| method | settings |", "| --- | --- |", *rows]) + "\n", (
        "README.md's bundled settings differ from models/model_set.json"
    )


def test_restore_help_shows_every_per_task_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse wraps at hyphens otherwise
    assert main(["restore", "--help"]) == 0
    text = capsys.readouterr().out
    rows = [(row, name) for pipeline in PIPELINES.values() for row in pipeline.TASK_DEFAULTS for name in row.settings]
    assert rows
    for row, name in rows:
        assert f"{row.label}: {row.settings_text([name])}" in text
