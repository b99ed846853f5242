import io

from proxyproject.lib.console import format_table, progress


def test_table_aligns_text_left_and_numbers_right():
    table = format_table(["device", "requests", "cost"], [["laptop-1", 12, "$1.50"], ["desktop-22", 1500, "$10.25"]])
    assert table.splitlines() == [
        "device      requests    cost",
        "----------  --------  ------",
        "laptop-1          12   $1.50",
        "desktop-22      1500  $10.25",
    ]


def test_empty_table_says_none():
    assert format_table(["name"], []).splitlines()[-1] == "(none)"


def test_progress_yields_everything_and_reports_the_total_off_a_terminal():
    stream = io.StringIO()
    assert list(progress(range(5), 5, "rollup", stream=stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == "rollup: 5/5 done\n"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal():
    stream = FakeTerminal()
    list(progress(range(2), 2, "revoke", stream=stream, width=4))
    assert stream.getvalue() == "\rrevoke [##--] 1/2\rrevoke [####] 2/2\n"
