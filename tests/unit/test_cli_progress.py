"""The CLI's progress bar: drawn on a terminal's stderr only, so scripts and pipes never see it."""

import io

from rostersync.admin import cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_drawn_on_a_terminal(monkeypatch):
    err = Terminal()
    monkeypatch.setattr(cli.sys, "stderr", err)
    bar = cli._Progress(4, "plan")
    for _ in range(4):
        bar.step()
    bar.close()
    frames = err.getvalue().split("\r")
    assert frames[1].startswith("plan [") and frames[1].rstrip().endswith("1/4")
    assert "#" * 30 in frames[-1] and frames[-1].endswith("4/4\n")


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(cli.sys, "stderr", err)
    bar = cli._Progress(3, "resync")
    bar.step()
    bar.close()
    assert err.getvalue() == ""
