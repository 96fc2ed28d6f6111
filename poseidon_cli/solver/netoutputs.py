"""The ``<name>.netoutputs`` CSV that Poseidon writes next to its logs.

Layout (one block per net, blank line between blocks)::

    Iteration,time,loss,<output 0>,<output 1>,...,
    0,0.12,2.30259,0.1,2.30259,
    100,3.4,0.51,...,

The first block is the train net (one row per display: iteration, seconds since training started,
the displayed (smoothed) loss, every element of every output blob); then one block per test net
(one row per test: iteration, seconds, mean test loss, mean of every output element). An output
blob with several elements contributes ``name_0, name_1, ...`` columns. In a distributed run the
caller passes values already averaged over workers.

The file is rewritten (atomically) after each new row, so an interrupted run keeps what it had.
"""
from __future__ import annotations

import os
import tempfile


def column_names(names_and_counts) -> list:
    """[(blob name, element count)] -> CSV column names."""
    cols = []
    for name, count in names_and_counts:
        if count == 1:
            cols.append(name)
        else:
            cols.extend(f"{name}_{k}" for k in range(count))
    return cols


class NetOutputs:
    """Collects rows for the train net and each test net; ``write()`` saves the CSV."""

    def __init__(self, path: str | None, num_test_nets: int = 0):
        self.path = path
        self.train_columns = None
        self.test_columns = [None] * num_test_nets
        self.train_rows = []
        self.test_rows = [[] for _ in range(num_test_nets)]

    def add_train(self, it, seconds, loss, columns, values):
        self.train_columns = list(columns)
        self.train_rows.append((it, seconds, loss, list(values)))
        self.write()

    def add_test(self, net_id, it, seconds, loss, columns, values):
        self.test_columns[net_id] = list(columns)
        self.test_rows[net_id].append((it, seconds, loss, list(values)))
        self.write()

    def render(self) -> str:
        blocks = [self._block(self.train_columns, self.train_rows)]
        for cols, rows in zip(self.test_columns, self.test_rows):
            blocks.append(self._block(cols, rows))
        return "\n".join(blocks)

    @staticmethod
    def _block(columns, rows) -> str:
        head = "Iteration,time,loss," + "".join(f"{c}," for c in (columns or []))
        lines = [head]
        for it, seconds, loss, values in rows:
            cells = [str(int(it)), "%g" % seconds, "%g" % loss] + ["%g" % v for v in values]
            lines.append(",".join(cells) + ",")
        return "\n".join(lines) + "\n"

    def write(self):
        if not self.path:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".netoutputs.", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(self.render())
        os.replace(tmp, self.path)


def read_netoutputs(path: str) -> list:
    """Parse a .netoutputs file into blocks: [{"columns": [...], "rows": [[floats]]}]."""
    blocks, current = [], None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                current = None
                continue
            cells = line.rstrip(",").split(",")
            if current is None:
                current = {"columns": cells, "rows": []}
                blocks.append(current)
            else:
                current["rows"].append([float(c) for c in cells])
    return blocks
