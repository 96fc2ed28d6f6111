"""pycaffe's ``caffe.draw``: a NetParameter as a graph (needs pydot, the ``[draw]`` extra; image
formats also need Graphviz's ``dot`` program).

* ``get_pydot_graph(net_param, rankdir="LR", label_edges=True, phase=None, display_lrm=False)``:
  a ``pydot.Dot`` with one box per layer (name, type and, for Convolution/Pooling/InnerProduct,
  the main settings; ``display_lrm`` adds each param's lr_mult and decay_mult) and one octagon per
  blob; edges bottom blob -> layer -> top blob, labelled with the blob's name when
  ``label_edges``. ``phase`` (TRAIN/TEST) keeps only the layers that phase includes.
* ``draw_net(net_param, rankdir, ext="png", phase=None, display_lrm=False)``: the drawing's bytes.
* ``draw_net_to_file(net_param, filename, rankdir="LR", phase=None, display_lrm=False)``: format
  from the file extension; ``.dot``/``.gv``/``.raw`` write the graph source (no Graphviz needed).

Errors: ``ImportError`` without pydot, saying how to install it; ``RuntimeError`` when an image
format is asked for and Graphviz's ``dot`` is missing.
"""
from __future__ import annotations

from ._proto import caffe_pb2

_SOURCE_FORMATS = ("dot", "gv", "raw")


def _pydot():
    try:
        import pydot
    except ImportError:
        raise ImportError("caffe.draw needs pydot: pip install 'poseidon-cli[draw]' (or: pip "
                          "install pydot; image formats also need Graphviz)") from None
    return pydot


def _included(layer, phase):
    if phase is None:
        return True
    if layer.include:
        return any((not r.HasField("phase")) or r.phase == phase for r in layer.include)
    return not any(r.HasField("phase") and r.phase == phase for r in layer.exclude)


def _label(layer, display_lrm):
    lines = [layer.name, f"({layer.type})"]
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        k = list(p.kernel_size) or [p.kernel_h, p.kernel_w]
        s = list(p.stride) or [1]
        pad = list(p.pad) or [0]
        lines.append(f"kernel {'x'.join(map(str, k))} stride {s[0]} pad {pad[0]}")
        lines.append(f"outputs {p.num_output}")
    elif layer.type == "Pooling":
        p = layer.pooling_param
        pool = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        lines.append(f"{pool} kernel {p.kernel_size or p.kernel_h} stride {p.stride}")
    elif layer.type == "InnerProduct":
        lines.append(f"outputs {layer.inner_product_param.num_output}")
    if display_lrm:
        for i, spec in enumerate(layer.param):
            lines.append(f"param {i}: lr_mult {spec.lr_mult:g} decay_mult {spec.decay_mult:g}")
    return "\\n".join(lines)


def get_pydot_graph(caffe_net, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    blobs = {}

    def blob_node(name):
        if name not in blobs:
            node = pydot.Node(f"blob_{name}", label=name, shape="octagon", style="filled",
                              fillcolor="#E0E0E0")
            graph.add_node(node)
            blobs[name] = node
        return blobs[name]

    for i, layer in enumerate(caffe_net.layer):
        if not _included(layer, phase):
            continue
        node = pydot.Node(f"layer_{i}_{layer.name}", label=_label(layer, display_lrm),
                          shape="box", style="filled", fillcolor="#6495ED")
        graph.add_node(node)
        for b in layer.bottom:
            graph.add_edge(pydot.Edge(blob_node(b), node, **({"label": b} if label_edges else {})))
        for t in layer.top:
            graph.add_edge(pydot.Edge(node, blob_node(t), **({"label": t} if label_edges else {})))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in _SOURCE_FORMATS:
        return graph.to_string().encode()
    try:
        return graph.create(format=ext)
    except (FileNotFoundError, OSError) as exc:
        raise RuntimeError(f"drawing a .{ext} needs Graphviz's 'dot' program ({exc}); install "
                           f"graphviz, or write a .dot file") from None


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    ext = filename[filename.rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase=phase, display_lrm=display_lrm)
    with open(filename, "wb") as f:
        f.write(data)
