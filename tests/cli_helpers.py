"""Helpers for the command line's tests (imported by them; not a test module)."""

from numina_hooks import cli


def cli_error(capsys, argv) -> str:
    """Run ``numina argv``: it must exit 2 with one line on stderr and no traceback; that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
