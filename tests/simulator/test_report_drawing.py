"""Drawing a report's figures in forked helper processes: the same PNGs in the same order, and
a drawing that fails, in a helper or here, is drawn (and raises) in the calling process."""

import os
import time

import pytest

from simulator.report import document, figures, write_report
from simulator.report.document import Figure, Report, Section, paragraph


@pytest.fixture
def three_processes(monkeypatch):
    monkeypatch.setattr(figures, "drawing_workers", lambda n: min(3, n))


def slow(index: int):
    def render() -> bytes:
        time.sleep(0.05)  # long enough that the helpers take some of the figures
        return f"{index}:{os.getpid()}".encode()
    return render


def test_helpers_draw_some_figures_and_the_results_keep_their_order(three_processes):
    pngs = figures.draw_all([slow(i) for i in range(12)])
    assert [p.split(b":")[0] for p in pngs] == [str(i).encode() for i in range(12)]
    drawers = {int(p.split(b":")[1]) for p in pngs}
    assert os.getpid() in drawers and len(drawers) > 1


def test_a_figure_that_fails_raises_its_own_error_here(three_processes):
    def broken() -> bytes:
        raise ValueError("figure 5 cannot be drawn")

    renders = [slow(i) for i in range(8)]
    renders[5] = broken
    with pytest.raises(ValueError, match="figure 5 cannot be drawn"):
        figures.draw_all(renders)


def test_what_a_killed_helper_took_is_drawn_here(three_processes):
    parent = os.getpid()

    def dies_in_a_helper(index: int):
        def render() -> bytes:
            if os.getpid() != parent:
                os._exit(9)
            return str(index).encode()
        return render

    assert figures.draw_all([dies_in_a_helper(i) for i in range(6)]) == [str(i).encode() for i in range(6)]


def test_one_process_where_asked(monkeypatch):
    monkeypatch.setenv("LIFELONG_REPORT_WORKERS", "1")
    assert figures.drawing_workers(6) == 1
    monkeypatch.setenv("LIFELONG_REPORT_WORKERS", "2")
    assert figures.drawing_workers(6) == min(2, len(os.sched_getaffinity(0)))
    assert figures.drawing_workers(1) == 1


def test_drawn_fills_every_pending_figure_in_report_order():
    order = []

    def pending(name: str):
        return Figure(name, lambda: order.append(name) or name.encode(), name)

    inner = Section("inner", "Inner", (pending("c"), paragraph("text")))
    report = Report("t", (pending("a"), Figure("ready", b"done", "ready")),
                    (Section("outer", "Outer", (pending("b"),), (inner,)), Section("last", "Last", (pending("d"),))))
    filled = document.drawn(report, lambda renders, costs: [r() for r in renders])
    assert order == ["a", "b", "c", "d"]
    assert [b.png for b in filled.intro] == [b"a", b"done"]
    assert filled.sections[0].blocks[0].png == b"b" and filled.sections[0].children[0].blocks[0].png == b"c"
    assert filled.sections[1].blocks[0].png == b"d" and filled.sections[0].children[0].blocks[1].spans[0].text == "text"


def test_a_report_drawn_by_several_processes_is_byte_identical(digits_run, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_REPORT_WORKERS", "1")
    write_report([digits_run], tmp_path / "one")
    monkeypatch.setattr(figures, "drawing_workers", lambda n: min(3, n))
    write_report([digits_run], tmp_path / "three")
    one = sorted((tmp_path / "one" / "figures").glob("*.png"))
    assert len(one) == 6
    for png in one:
        assert png.read_bytes() == (tmp_path / "three" / "figures" / png.name).read_bytes()
    assert (tmp_path / "one" / "index.html").read_bytes() == (tmp_path / "three" / "index.html").read_bytes()


def test_the_costliest_figures_are_taken_first(monkeypatch):
    monkeypatch.setattr(figures, "drawing_workers", lambda n: 2)
    read, write = os.pipe()

    def render(index: int):
        def draw() -> bytes:
            os.write(write, bytes([index]))  # the order in which the two processes took them
            time.sleep(0.05)
            return bytes([index])
        return draw

    pngs = figures.draw_all([render(i) for i in range(4)], costs=[1, 5, 2, 9])
    os.close(write)
    started = list(os.read(read, 16))
    assert pngs == [bytes([i]) for i in range(4)]
    assert set(started[:2]) == {3, 1} and set(started[2:]) == {2, 0}


def test_helpers_leave_ctrl_c_to_the_calling_process(three_processes):
    import signal

    def handler_in_use() -> bytes:
        time.sleep(0.05)
        return str(signal.getsignal(signal.SIGINT) is signal.SIG_IGN).encode() + f":{os.getpid()}".encode()

    # A process started in the background by a shell ignores SIGINT from its start; the calling
    # process must keep whatever it had, so give it Python's own handler for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        seen = {tuple(p.split(b":")) for p in figures.draw_all([handler_in_use for _ in range(8)])}
    finally:
        signal.signal(signal.SIGINT, previous)
    here = [ignored for ignored, pid in seen if int(pid) == os.getpid()]
    helpers = [ignored for ignored, pid in seen if int(pid) != os.getpid()]
    assert helpers and all(i == b"True" for i in helpers) and all(i == b"False" for i in here)
