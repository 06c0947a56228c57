import threading
import time

from hub.store.db import WriterGate


def test_the_urgent_writer_goes_first_and_a_holder_may_reenter():
    gate = WriterGate()
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with gate.hold(), gate.hold():  # the same thread again: no deadlock
            holding.set()
            release.wait(5)

    def writer(name: str, urgent: bool) -> None:
        with gate.hold(urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    holding.wait(5)
    waiting = [threading.Thread(target=writer, args=(f"projection-{i}", False))
               for i in range(3)]
    for t in waiting:
        t.start()
    time.sleep(0.05)  # the projections queue first...
    journal = threading.Thread(target=writer, args=("journal", True))
    journal.start()
    while not gate._urgent:  # until the journal is waiting (no race with the release)
        time.sleep(0.001)
    release.set()
    for t in [first, journal, *waiting]:
        t.join(5)
    assert order[0] == "journal"  # ...and the journal still goes before them
    assert sorted(order[1:]) == [f"projection-{i}" for i in range(3)]
