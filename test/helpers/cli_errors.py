"""Command-line errors are one `error:` line with a remedy and exit status 2 (never a traceback)."""

from __future__ import annotations

from molmo2_ros.cli import main


def one_error_line(capsys, argv: list[str], *expected: str) -> str:
    """Run `molmo2-ros ARGV` in-process; assert status 2 and exactly one `error:` line containing `expected`."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]
