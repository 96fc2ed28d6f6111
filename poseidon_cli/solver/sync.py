"""How a Solver talks to the other workers of its run: one interface, local by default.

The Solver calls its ``sync`` at five points of the loop and never imports ``ps`` or
``distributed`` (a cluster's :class:`Sync` lives in ``distributed/ps_sync.py``). This is the role
Caffe gives ``Solver::Callback`` (NCCL plugs in there) and ChainerMN gives its multi-node
optimizer plus its observation aggregator, as one object:

``bind(solver)``
    once, at the end of ``Solver.__init__`` (the nets and the history exist);
``begin_pass(last)``
    before each of the ``iter_size`` forward/backward passes of an iteration; ``last`` is True for
    the final one (only its gradients are complete);
``update(solver)``
    instead of the local update: turn this iteration's gradients into new weights;
``mean(values, what, net_id=0)``
    combine logged scalars over the workers (``what`` is a :class:`Reduction`; ``net_id`` the
    test net for the TEST_* reductions); returns a list of floats of the same length;
``test_share(n)``
    how many of a test's ``n`` forward passes this worker runs;
``before_read(for_snapshot=False)``
    before the weights are read for testing, or for a snapshot (``for_snapshot=True``);
``writes_files``
    whether this worker writes snapshots (exactly one worker of a cluster does).

:class:`LocalSync` is the single-node behaviour: the Caffe update on the local gradient, values
as they are, every test pass, snapshots written.
"""
from __future__ import annotations

import enum


class Reduction(enum.Enum):
    """Which logged values :meth:`Sync.mean` is asked to combine."""
    LOSS = "loss"                    # the iteration's loss (every iteration)
    TRAIN_OUTPUTS = "train_outputs"  # the train net's outputs (display iterations)
    TEST_LOSS = "test_loss"          # a test's mean loss (per test net)
    TEST_OUTPUTS = "test_outputs"    # a test's mean outputs (per test net)


class Sync:
    """The interface (see the module docstring). Subclasses override every method."""

    def bind(self, solver) -> None:
        raise NotImplementedError

    def begin_pass(self, last: bool) -> None:
        raise NotImplementedError

    def update(self, solver) -> None:
        raise NotImplementedError

    def mean(self, values, what: Reduction, net_id: int = 0) -> list:
        raise NotImplementedError

    def test_share(self, n: int) -> int:
        raise NotImplementedError

    def before_read(self, for_snapshot: bool = False) -> None:
        raise NotImplementedError

    @property
    def writes_files(self) -> bool:
        raise NotImplementedError

    def divergence_hint(self) -> str:
        """What about this synchronisation could make training diverge, for the error a
        non-finite loss raises; "" when nothing does (one node)."""
        return ""


class LocalSync(Sync):
    """One worker alone: the Solver's own update, nothing to combine or wait for."""

    def bind(self, solver) -> None:
        self.solver = solver

    def begin_pass(self, last: bool) -> None:
        pass

    def update(self, solver) -> None:
        solver.apply_update_local()

    def mean(self, values, what: Reduction, net_id: int = 0) -> list:
        return list(values)

    def test_share(self, n: int) -> int:
        return n

    def before_read(self, for_snapshot: bool = False) -> None:
        pass

    @property
    def writes_files(self) -> bool:
        return True
