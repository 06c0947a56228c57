"""Dead letters: every refused input, kept byte for byte in SQL with why it was refused, and
published to ``hie.deadletter.v1`` as a feed.

``letter`` builds them (pure), ``store`` writes them, ``keeper`` is the gateway's group
commit, ``read`` answers ``hub deadletters`` and ``GET /deadletters``, ``archive`` copies
letters that only reached the topic (adapters without a store) into SQL.
"""

from hub.deadletters.letter import DeadLetter, Record, refuse

__all__ = ["DeadLetter", "Record", "refuse"]
