import pytest

from enclave import __version__
from enclave.cli import build_parser, main


def test_version_flag_prints_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"enclave {__version__}"


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: enclave" in capsys.readouterr().err


def test_parser_builds_every_registered_subcommand() -> None:
    parser = build_parser()
    assert parser.prog == "enclave"
