"""Progress without a terminal: `sealq loop > log 2>&1` gets one plain line per finished passage."""

import io

import pytest
from rich.console import Console

from sealq.cli.loop import PlainEvents, RichEvents, _with_progress, progress_events
from sealq.vocab import Source

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _plain(width=40):
    """PlainEvents on a narrow, non-terminal console (lines must not be wrapped), with a fake clock."""
    clock = FakeClock()
    console = Console(file=io.StringIO(), width=width)
    return PlainEvents(console, clock=clock), console, clock


def _lines(console):
    return console.file.getvalue().splitlines()


def test_one_line_per_passage_with_rewards_elapsed_and_time_left():
    events, console, clock = _plain()
    events.stage("loading smollm2-135m into llama.cpp")
    events.start(4, 3)
    clock.now += 130
    for j, reward in enumerate((0.2, 0.0, None)):
        events.self_edit_done(0, j, reward, Source.SELF_EDIT)
    events.passage_done(0)
    clock.now += 70
    events.self_edit_done(1, 0, -0.2)  # the source defaults to a sampled self-edit
    events.passage_done(1)
    assert _lines(console) == [
        "loading smollm2-135m into llama.cpp",
        "passage 1/4 done: rewards +0.20 +0.00 skipped; 2.2 min elapsed, about 6.5 min left",  # 130 s x 3 left
        "passage 2/4 done: rewards -0.20; 3.3 min elapsed, about 3.3 min left",  # 200 s / 2 x 2 left
    ]


def test_the_last_passage_has_no_estimate_and_rewards_reset_per_passage():
    events, console, clock = _plain()
    events.start(2, 1)
    events.self_edit_done(0, 0, 0.4)
    clock.now += 5
    events.passage_done(0)
    clock.now += 5
    events.self_edit_done(1, 0, None)
    events.passage_done(1)
    first, last = _lines(console)
    assert first == "passage 1/2 done: rewards +0.40; 5 s elapsed, about 5 s left"
    assert last == "passage 2/2 done: rewards skipped; 10 s elapsed"


def test_eval_sources_are_named():
    events, console, clock = _plain()
    events.start(1, 2)
    events.self_edit_done(0, 0, 0.0, Source.PASSAGE_ONLY)
    events.self_edit_done(0, 0, 0.2, Source.SELF_EDIT)
    events.self_edit_done(0, 1, None, Source.SELF_EDIT)
    events.self_edit_done(0, 0, 0.4, Source.TEACHER)
    events.total(4)  # ignored: the lines count passages
    clock.now += 1
    events.passage_done(0)
    events.close()
    assert _lines(console) == ["passage 1/1 done: rewards +0.20 skipped, passage only +0.00, teacher +0.40; 1 s elapsed"]


def test_a_resumed_passage_says_it_was_recorded_and_does_not_shorten_the_estimate():
    events, console, clock = _plain()
    events.start(3, 2)
    events.passage_done(0)  # recorded before the resume: no inner step ran
    clock.now += 50
    events.self_edit_done(1, 0, 0.0)
    events.passage_done(1)
    assert _lines(console) == ["passage 1/3 done: recorded before; 0 s elapsed",
                               "passage 2/3 done: rewards +0.00; 50 s elapsed, about 50 s left"]


@pytest.fixture
def no_forced_terminal(monkeypatch):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def test_plain_lines_when_not_a_terminal_bars_on_a_terminal(no_forced_terminal):
    assert isinstance(progress_events(Console(file=io.StringIO())), PlainEvents)
    bars = progress_events(Console(file=io.StringIO(), force_terminal=True))
    assert isinstance(bars, RichEvents)
    bars.close()


def test_the_cli_uses_plain_lines_when_stderr_is_not_a_terminal(no_forced_terminal, capsys):
    # pytest captures stderr, so it is not a terminal here, as in `sealq loop > log 2>&1`
    events = _with_progress(lambda events: events)
    assert isinstance(events, PlainEvents)
    events.stage("loading the training model")
    assert capsys.readouterr().err == "loading the training model\n"
