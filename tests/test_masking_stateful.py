"""Stateful property test of masking rounds on the drivers.

A hypothesis state machine plays the network of a SecAgg round (complete
graph, honest-server or malicious-server mode): its rules are protocol
events (deliver a client's message, a client vanishing, a message to a
client or a reply corrupted in transit, a reply replayed, a message sent to
a client again, the stage's deadline). Beside the real round it keeps a
model of who is still in it, and at every deadline it *predicts* what the
server must do from the model alone (the next stage's recipients, or an
abort with TOO_FEW_SURVIVORS, or the completed round with exactly which
clients included and which dropped at which stage) before it looks at what
the server did. The sparse graph's schedules are a separate property.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from secagg.drivers import StageAlreadyAnswered
from secagg.encoding import wire
from secagg.errors import AbortReason, LocalProtocolError, ProtocolAborted, RemoteProtocolError, WireFormatError
from secagg.protocols.masking import Abort, ServerResult
from secagg.protocols.stages import Stage

from masking_harness import Round


def _truncate(party: int, msg: object) -> bytes:
    return wire.encode(msg)[:-1]


class MaskingRoundMachine(RuleBasedStateMachine):
    """Rounds (one after another) and their model: ``recipients`` of the
    current stage, ``answered`` (replies the server must have accepted),
    ``settled`` (parties of this stage that answered or failed), ``members``
    (who answered each closed stage), ``ended`` (clients whose session is
    over, so they refuse what comes next), ``vanished`` (clients gone without
    a word). Events that lose a client draw on a budget chosen per round (up
    to one more than the round can survive), so rounds both complete and abort."""

    @initialize(n=st.integers(3, 6), malicious=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
    def setup(self, n: int, malicious: bool, seed: int, data: st.DataObject) -> None:
        self.n, self.malicious, self.seed = n, malicious, seed
        self._new_round(data)

    def _new_round(self, data: st.DataObject) -> None:
        self.r = Round(n=self.n, dim=3, malicious=self.malicious, seed=self.seed, dropout_tolerance=0.0,
                       threshold=self.n // 2 + 1)
        self.t = self.r.params.threshold
        self.budget = data.draw(st.integers(0, self.n - self.t + 1), label="clients the round may lose")
        self.lost: set[int] = set()
        self.stages = [s for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT,
                                   Stage.CONSISTENCY_CHECK, Stage.UNMASKING)
                       if self.malicious or s is not Stage.CONSISTENCY_CHECK]
        self.members: dict[Stage, set[int]] = {}
        self.ended: set[int] = set()
        self.vanished: set[int] = set()
        self.history: dict[int, bytes] = {}  # party -> its last accepted reply, any stage
        self._open(set(self.r.ids))

    def _open(self, recipients: set[int]) -> None:
        self.recipients = recipients
        self.answered: set[int] = set()
        self.settled: set[int] = set()
        self.delivered: dict[int, bytes] = {}  # party -> the message it got this stage
        self.accepted: dict[int, bytes] = {}  # party -> its reply the server accepted

    # ------------------------------------------------------------------ helpers
    @property
    def live(self) -> bool:
        return not self.r.driver.done

    def can_lose(self) -> bool:
        return self.live and bool(self.r.network.outbox) and len(self.lost) < self.budget

    def _pending(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.r.network.outbox)), label="party")

    def _answered(self, p: int, message: bytes, reply: object) -> None:
        self.settled.add(p)
        self.delivered[p] = message
        self.answered.add(p)
        self.accepted[p] = self.history[p] = wire.encode(reply)

    # ------------------------------------------------------------------ rules: the network works
    @precondition(lambda self: self.live and self.r.network.outbox)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """A client gets its message; unless its session is over it answers and the server accepts."""
        p = self._pending(data)
        message = self.r.network.outbox[p]
        replies = self.r.step(parties=[p], close=False)
        if p in self.ended:
            assert replies == {} and self.r.refusal(p) is AbortReason.WRONG_ROUND
            self.settled.add(p)
            self.delivered[p] = message
            return
        assert self.r.error(p) is None and set(replies) == {p}
        assert p not in self.r.driver.awaiting
        self._answered(p, message, replies[p])

    @precondition(lambda self: self.live and self.r.network.outbox)
    @rule()
    def deliver_the_rest(self) -> None:
        """Every pending message is delivered; every client whose session is not over answers."""
        pending = dict(self.r.network.outbox)
        replies = self.r.step(close=False)
        assert set(replies) == set(pending) - self.ended
        for p, message in pending.items():
            if p in replies:
                self._answered(p, message, replies[p])
            else:
                self.settled.add(p)
                self.delivered[p] = message

    @precondition(lambda self: self.live and not self.r.network.outbox)
    @rule()
    def deadline(self) -> None:
        """Every message of the stage was handled; the deadline closes it."""
        self._close()

    # ------------------------------------------------------------------ rules: the network loses clients
    @precondition(can_lose)
    @rule(data=st.data())
    def vanish(self, data: st.DataObject) -> None:
        """A client vanishes: its message is lost and it never answers again."""
        p = self._pending(data)
        assert self.r.step(skip=[p], parties=[p], close=False) == {}
        self.vanished.add(p)  # the transport does not know yet: the driver still awaits it
        self.lost.add(p)

    @precondition(can_lose)
    @rule(data=st.data())
    def corrupt_reply(self, data: st.DataObject) -> None:
        """A client's reply arrives truncated: the server driver refuses it
        (typed, recorded) and the client counts as dropped at this stage."""
        p = self._pending(data)
        self.r.step(parties=[p], tamper_reply=_truncate, close=False)
        self.settled.add(p)
        self.lost.add(p)
        if p in self.ended:
            return
        party, error = self.r.watch.errors[-1]
        assert party == p and isinstance(error, WireFormatError)
        assert self.r.driver.failures[p].startswith(f"{self.r.stage.value}: rejected (malformed_message)")

    @precondition(can_lose)
    @rule(data=st.data())
    def corrupt_message(self, data: st.DataObject) -> None:
        """The server's message arrives truncated: the client's driver refuses
        to decode it and sends nothing; the transport reports it gone."""
        p = self._pending(data)
        assert self.r.step(parties=[p], tamper=_truncate, close=False) == {}
        self.settled.add(p)
        self.lost.add(p)
        assert isinstance(self.r.error(p), WireFormatError)
        assert self.r.driver.failures[p].startswith(f"{self.r.stage.value}: refused")

    @precondition(lambda self: self.can_lose() and len(self.lost | set(self.r.network.outbox)) <= self.budget)
    @rule()
    def early_deadline(self) -> None:
        """The deadline passes with messages still pending: they are lost."""
        self.lost |= set(self.r.network.outbox)
        self._close()

    @precondition(lambda self: self.live and self.delivered)
    @rule(data=st.data())
    def resend_message(self, data: st.DataObject) -> None:
        """A client gets a message of this stage again (an at-least-once
        network): it answers nothing, and nothing changes. Its stage is past:
        a typed ``wrong_round`` refusal that leaves it in the round; a second
        ForwardedShares finds the update already spent (a local error, the
        client stays in the round too); a client whose session is over
        refuses as before."""
        p = data.draw(st.sampled_from(sorted(self.delivered)), label="party")
        stage = self.r.stage
        first = stage is Stage.ADVERTISE_KEYS  # the round's parameters come with the contribution
        assert self.r.send(p, self.delivered[p], self.r.network.contributions[p] if first else None) is None
        error = self.r.error(p)
        if p in self.ended:
            assert isinstance(error, (RemoteProtocolError, StageAlreadyAnswered))
            return
        if stage is Stage.MASKED_INPUT and p in self.answered:
            # the update was spent on the masked input: a local error
            assert isinstance(error, LocalProtocolError) and not self.r.ended(p)
            return
        assert isinstance(error, RemoteProtocolError) and error.reason is AbortReason.WRONG_ROUND
        # still in the round, unless it answered the last stage (its round is over: state gone)
        assert self.r.ended(p) == (stage is Stage.UNMASKING and p in self.answered)

    # ------------------------------------------------------------------ rules: harmless noise
    @precondition(lambda self: self.live and self.accepted)
    @rule(data=st.data())
    def replay_reply(self, data: st.DataObject) -> None:
        """A reply the server accepted arrives again: refused as a duplicate, nothing changes."""
        p = data.draw(st.sampled_from(sorted(self.accepted)), label="party")
        assert self.r.driver.receive(p, self.accepted[p]) is False
        assert self.r.watch.errors[-1][1].reason is AbortReason.DUPLICATE_MESSAGE

    # ------------------------------------------------------------------ rules: after the round
    @precondition(lambda self: not self.live)
    @rule(data=st.data())
    def after_the_end(self, data: st.DataObject) -> None:
        """Once the round is over, a reply arriving is refused (typed, wrong
        round) and recorded, the stage cannot be closed again, and the outcome stays."""
        outcome, seen = self.r.outcome, len(self.r.watch.errors)
        if self.history:
            p = data.draw(st.sampled_from(sorted(self.history)), label="party")
            assert self.r.driver.receive(p, self.history[p]) is False
            (party, error), = self.r.watch.errors[seen:]
            assert party == p and error.reason is AbortReason.WRONG_ROUND
        with pytest.raises(LocalProtocolError):
            self.r.driver.close_stage()
        assert self.r.outcome is outcome

    @precondition(lambda self: not self.live)
    @rule(data=st.data())
    def next_round(self, data: st.DataObject) -> None:
        """A new round of the same clients (a new session)."""
        self.seed += 1
        self._new_round(data)

    # ------------------------------------------------------------------ the prediction
    def _close(self) -> None:
        """Close the stage. The server's next move is predicted from the
        model first, then checked."""
        stage = self.r.stage
        members = set(self.answered)
        aborts = len(members) < self.t
        final = stage is self.stages[-1]
        expected_dropped = {}
        if final and not aborts:
            closed = {**self.members, stage: members}
            for u in self.r.ids:
                gone = next((s for s in self.stages if u not in closed[s]), None)
                if gone is not None:
                    expected_dropped[u] = gone.value
        event("aborted" if aborts else "completed" if final else f"closed {stage.value}")
        self.r.close()
        if aborts:
            out = self.r.outcome
            assert isinstance(out, Abort) and out.reason is AbortReason.TOO_FEW_SURVIVORS
            assert out.stage == stage.value and self.r.network.outbox == {}
            with pytest.raises(ProtocolAborted):
                self.r.driver.result()
            return
        self.members[stage] = members
        if not final:
            assert set(self.r.network.outbox) == members  # exactly the survivors hear the next stage
            self._open(members)
            return
        included = self.members[Stage.MASKED_INPUT]
        out = self.r.outcome
        assert isinstance(out, ServerResult), out
        assert out.included == tuple(sorted(included)) and dict(out.dropped) == expected_dropped
        err = np.max(np.abs(out.sum_weighted - self.r.expected_sum(sorted(included))))
        assert err <= self.r.params.encoding.sum_error_bound(len(included))
        assert out.sum_weights == len(included)
        assert self.r.driver.result().included == out.included

    # ------------------------------------------------------------------ invariants
    @invariant()
    def the_driver_awaits_exactly_the_unsettled(self) -> None:
        if not self.live:
            return
        assert self.r.driver.awaiting == frozenset(self.recipients - self.settled)
        assert self.r.driver.ready == (not (self.recipients - self.settled))

    @invariant()
    def every_refusal_is_typed_and_recorded(self) -> None:
        assert all(isinstance(e, RemoteProtocolError) for _, e in self.r.watch.errors)
        assert len(self.r.watch.rejections) == len(self.r.watch.errors)

    @invariant()
    def vanished_clients_are_never_addressed_again(self) -> None:
        assert not self.vanished & set(self.r.network.outbox)


MaskingRoundMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=50, deadline=None,
                                                 suppress_health_check=[HealthCheck.too_slow])
TestMaskingRound = MaskingRoundMachine.TestCase


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**16), st.lists(st.integers(1, 40), max_size=3, unique=True),
       st.sampled_from(["share_keys", "masked_input", "unmasking"]))
def test_sparse_graph_schedules(seed, dropped, stage):
    r = Round(n=40, dim=3, protocol="secagg+", seed=seed, dropout_tolerance=0.05)
    out = r.run(drop={i: stage for i in dropped})
    if isinstance(out, Abort):
        assert out.reason is AbortReason.TOO_FEW_SURVIVORS
        return
    included = [i for i in r.ids if stage == "unmasking" or i not in dropped]
    assert list(out.included) == included
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= r.params.encoding.sum_error_bound(40)
