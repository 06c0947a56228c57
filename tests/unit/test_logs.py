import logging

from hub.logs import OncePerWindow


def record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


def test_a_library_retry_message_passes_once_per_window_and_counts_the_rest():
    now = [0.0]
    f = OncePerWindow(window=60, clock=lambda: now[0])
    passed = []
    for t in range(0, 130, 1):  # one attempt per second, for two minutes
        now[0] = float(t)
        r = record("aiokafka.conn", "Unable connect to node %s")
        if f.filter(r):
            passed.append((t, r.msg))
    assert [t for t, _ in passed] == [0, 60, 120]
    assert passed[1][1].endswith("(59 more like this in the last 60 s not shown)")
    # Another message of the same library is not held back by the first one's window; the
    # hub's own records are never filtered.
    assert f.filter(record("aiokafka.cluster", "Unable to update metadata"))
    assert all(f.filter(record("hub.engine.runner", "store away")) for _ in range(5))
