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


def _all_parsers(parser):  # type: ignore[no-untyped-def]
    import argparse

    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.extend(_all_parsers(child))
    return found


def test_every_option_help_says_its_default_and_its_choices() -> None:
    import argparse

    for parser in _all_parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
            text = formatter._expand_help(action)
            where = f"{parser.prog} {action.option_strings[0]}"
            assert "default" in text or action.required, where
            for choice in action.choices or ():
                assert str(choice) in text, where


def test_serve_help_names_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("$ENCLAVE_PORT", "$ENCLAVE_LOAD_TOKEN or $LOAD_TOKEN", "$ENCLAVE_PUSH_URL"):
        assert name in out
    assert "ENCLAVE_PUSH_QUEUE_SIZE" in out  # a setting without a flag
    assert "ENCLAVE_RESTART_LIMIT" in out


def test_log_level_after_the_subcommand_in_any_case() -> None:
    args = build_parser().parse_args(["models", "check", "x", "--log-level", "debug"])
    assert args.log_level == "DEBUG"
    args = build_parser().parse_args(["--log-level", "error", "models", "check", "x"])
    assert args.log_level == "ERROR"
    args = build_parser().parse_args(["models", "check", "x"])
    assert args.log_level == "WARNING"


def test_progress_on_a_terminal_redraws_one_line_with_bytes_and_eta() -> None:
    import io

    from enclave.cli._models import ProgressView

    now = [0.0]
    out = io.StringIO()
    view = ProgressView(out, tty=True, clock=lambda: now[0])
    hashing = {"proxy_status": "loading", "proxy_message": "verifying the model digest"}
    view.show(
        {**hashing, "proxy_progress": 0.0, "hashing": {"done_bytes": 0, "total_bytes": 4 << 30}}
    )
    now[0] = 10.0
    view.show(
        {
            **hashing,
            "proxy_progress": 0.05,
            "hashing": {"done_bytes": 1 << 30, "total_bytes": 4 << 30},
        }
    )
    view.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[")
    assert text.count("\r\x1b[K") == 2
    assert "(1.0 GiB of 4.0 GiB hashed, ETA 0:00:30)" in text
    assert text.endswith("\n")


def test_progress_off_a_terminal_is_plain_lines_without_repeats() -> None:
    import io

    from enclave.cli._models import ProgressView

    out = io.StringIO()
    view = ProgressView(out, tty=False)
    status = {
        "proxy_status": "loading",
        "proxy_message": "starting the engine",
        "proxy_progress": 0.21,
    }
    view.show(status)
    view.show(status)
    view.show({**status, "proxy_progress": 0.25})
    view.show({**status, "proxy_progress": 0.31})
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\r" not in out.getvalue()


def test_every_serve_flag_of_a_setting_reaches_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flag that parses but never reaches load_settings would be silently ignored (as
    --insecure-no-stream-padding once was): each one must arrive, with its value."""
    import argparse

    from enclave.cli import _serve
    from enclave.settings import SettingsError

    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    fields = _serve._settings_fields()
    argv = ["serve"]
    expected: dict[str, object] = {}
    for action in serve._actions:
        field = _serve._FIELD_OF_DEST.get(action.dest, action.dest)
        if field not in fields or not action.option_strings or field == "engine_command":
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
            expected[field] = True
        elif action.choices:
            argv += [flag, str(list(action.choices)[-1])]
            expected[field] = list(action.choices)[-1]
    for flag in ("--stream-padding-bytes", "--stream-cadence-ms"):
        argv += [flag, "40"]
    expected |= {"stream_padding_bytes": 40, "stream_cadence_ms": 40}
    seen: dict[str, object] = {}

    def capture(overrides: dict[str, object]) -> None:
        seen.update(overrides)
        raise SettingsError("captured")

    monkeypatch.setattr(_serve, "load_settings", capture)
    args = parser.parse_args(argv)
    assert _serve.run(args) == 2
    assert {name: seen.get(name) for name in expected} == expected
