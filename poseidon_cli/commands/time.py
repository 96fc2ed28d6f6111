"""``poseidon time``: pick the device, then ``timing.time_net`` (the timing math lives there)."""
from __future__ import annotations

from ..timing import time_net
from .common import select_device


def run(model, iterations=50, phase="TRAIN", gpu=None, cpu=False, out=None, json_path=None) -> int:
    """``caffe time`` for prototxt ``model`` on ``--gpu`` (first id) or the CPU, with the per-layer
    profile written to ``json_path`` when given; returns 0."""
    xp = select_device(None if cpu else gpu, cpu)   # --cpu wins, as it always did here
    return time_net(model, iterations=iterations, phase=phase, xp=xp, out=out,
                    json_path=json_path)
