import io
import logging

from simclr.data.shards.progress import Progress


def test_terminal_bar_and_plain_log_lines(caplog) -> None:
    tty = io.StringIO()
    with Progress(4, "x", stream=tty, tty=True) as p:
        for _ in range(4):
            p.update()
    assert "\r[" in tty.getvalue() and "4/4 (100%)" in tty.getvalue()
    plain = io.StringIO()
    with caplog.at_level(logging.INFO, logger="simclr.data"):
        with Progress(10, "y", stream=plain, tty=False, log_every_s=0.0) as p:
            p.update(5)
    assert plain.getvalue() == ""  # no carriage returns in batch logs
    assert "y: 5/10 (50%)" in caplog.text and "done" in caplog.text
