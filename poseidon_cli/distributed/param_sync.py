"""One record per learnable parameter on the distributed side: how it is kept in sync.

``net.learnable[k]`` (a :class:`~poseidon_cli.net.LearnableParam`) says what a parameter is;
``ParamSync`` says how this worker synchronises it. A ``PSSync`` builds one per k, in the same
order, so ``syncs[k].param is net.learnable[k]`` and no other index space is needed:

- ``scheme`` "ps": the gradient goes to the parameter server, fresh values come back
  (``WaitFreeBackprop``); "sfb": sufficient-factor broadcasting peer to peer (the SFB plan's
  weights); "local": never communicated (``lr_mult == 0``: BatchNorm statistics, frozen layers,
  as in Caffe's multi-GPU training);
- ``ps_name``: the tensor's name in the PS layout (the Net's ``<layer>/<index>`` name);
- ``bytes_sent`` / ``bytes_received``: what this worker moved for it (the stats file reads them).
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMES = ("ps", "sfb", "local")


@dataclass(eq=False)
class ParamSync:
    param: object            # the Net's LearnableParam
    scheme: str              # one of SCHEMES
    ps_name: str
    bytes_sent: int = 0
    bytes_received: int = 0

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")

    @property
    def communicated(self) -> bool:
        return self.scheme != "local"

    def row(self) -> dict:
        """This parameter's entry of ``stats.client<k>.json``."""
        return {"param": self.ps_name, "communicated": self.communicated, "scheme": self.scheme,
                "bytes_sent": int(self.bytes_sent), "bytes_received": int(self.bytes_received)}


def param_syncs(net, sfb_params=frozenset()) -> list[ParamSync]:
    """One ParamSync per ``net.learnable`` entry; ``sfb_params``: the learnable indices the SFB
    plan takes."""
    out = []
    for k, rec in enumerate(net.learnable):
        scheme = "sfb" if k in sfb_params else ("ps" if rec.lr_mult != 0 else "local")
        out.append(ParamSync(rec, scheme, rec.name))
    return out
