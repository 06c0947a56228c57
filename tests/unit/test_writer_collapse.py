from hypothesis import given
from hypothesis import strategies as st

from hub.engine.projection import Increment, Upsert
from hub.engine.writer import collapse

rows = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 20)), min_size=1, max_size=40)


@given(rows)
def test_upserts_pass_through_in_order(pairs):
    changes = [Upsert("t", {"k": k, "g": g, "seq": i}, ("k",), "g")
               for i, (k, g) in enumerate(pairs)]
    assert collapse(changes) == changes


@given(rows)
def test_increments_add_up_and_keep_the_latest(pairs):
    changes = [Increment("t", {"k": k}, {"n": 1}, {"last": f"{g:03d}"}) for k, g in pairs]
    out = {c.keys["k"]: c for c in collapse(changes)}
    for k in {k for k, _ in pairs}:
        assert out[k].counts["n"] == sum(1 for kk, _ in pairs if kk == k)
        assert out[k].latest["last"] == f"{max(g for kk, g in pairs if kk == k):03d}"


@given(rows, st.randoms(use_true_random=False))
def test_increments_come_in_one_order_whatever_the_arrival(pairs, random):
    # Two replicas' batches counting into the same rows lock them in the same order.
    changes = [Increment("t", {"k": k}, {"n": 1}, {"last": f"{g:03d}"}) for k, g in pairs]
    shuffled = list(changes)
    random.shuffle(shuffled)
    assert [c.keys for c in collapse(changes)] == [c.keys for c in collapse(shuffled)]
