"""The `rho` entry point: usage errors are one line naming the subcommand's help."""

from __future__ import annotations

import pytest

from rho_cli.main import main


def test_unknown_option_points_to_the_subcommands_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "rho pipeline: error: unrecognized arguments: --bogus (see 'rho pipeline --help')"


def test_unknown_top_level_option_points_to_rho_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert "(see 'rho --help')" in capsys.readouterr().err
