"""Every command reports bad input the same way: one "error: ..." line on stderr that says what to do, exit 2."""

import pytest
from typer.testing import CliRunner

from qiaoban.cli import app


@pytest.mark.parametrize("args", [
    ["models", "fetch", "no-such-model"],
    ["data", "validate", "no/such/file.jsonl"],
    ["safety", "bench", "no/such/file.jsonl"],
    ["eval", "annotate", "import", "no/such/sheet", "no/such/judgements.jsonl"],
    ["chat", "--model", "no/such/model.gguf", "--message", "你好"],
])
def test_bad_input_is_one_error_line_and_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
