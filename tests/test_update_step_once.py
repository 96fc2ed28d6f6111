"""The Caffe update step exists once (issue 12): ``solver/step.py: apply_step``.

Part 1 checks ``apply_step`` itself against per-element scalar math written out here from Caffe's
formulas, including the ``scale`` (1/iter_size) factor, lr_mult/decay_mult and L1, and that
stepping a tensor in row blocks gives exactly the whole-tensor result. Part 2 runs every path that
changes weights on the same gradients and demands bit-identical parameters and history.
"""
import io
import math

import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.ps.keys import Layout
from poseidon_cli.ps.protocol import PROTOCOL_VERSION
from poseidon_cli.ps.store import ShardStore
from poseidon_cli.ps.updaters import SolverUpdater
from poseidon_cli.solver import updates as U
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver
from poseidon_cli.solver.step import apply_step, history_slot

RULES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
MOMENTUM = {"SGD": 0.9, "Nesterov": 0.9, "AdaGrad": 0.0, "RMSProp": 0.0, "AdaDelta": 0.95, "Adam": 0.9}


def solver_param(kind, **kw):
    fields = dict(type=kind, base_lr=0.05, momentum=MOMENTUM[kind], rms_decay=0.95, momentum2=0.999,
                  delta=1e-6, weight_decay=0.01, regularization_type="L2", lr_policy="fixed")
    fields.update(kw)
    return caffe_pb2.SolverParameter(**fields)


def scalar_step(kind, p, w, g, st, it, rate, decay, reg, scale):
    """One element of one Caffe iteration in plain float math; ``st`` holds that element's history."""
    g = g * scale
    if decay:
        g += decay * (w if reg == "L2" else (0.0 if w == 0 else math.copysign(1.0, w)))
    mom, d = p.momentum, p.delta
    if kind == "SGD":
        st[0] = mom * st[0] + rate * g
        step = st[0]
    elif kind == "Nesterov":
        old = st[0]
        st[0] = mom * old + rate * g
        step = (1 + mom) * st[0] - mom * old
    elif kind == "AdaGrad":
        st[0] += g * g
        step = rate * g / (math.sqrt(st[0]) + d)
    elif kind == "RMSProp":
        st[0] = p.rms_decay * st[0] + (1 - p.rms_decay) * g * g
        step = rate * g / (math.sqrt(st[0]) + d)
    elif kind == "AdaDelta":
        st[0] = mom * st[0] + (1 - mom) * g * g
        u = g * math.sqrt((st[1] + d) / (st[0] + d))
        st[1] = mom * st[1] + (1 - mom) * u * u
        step = rate * u
    else:  # Adam
        t = it + 1
        st[0] = mom * st[0] + (1 - mom) * g
        st[1] = p.momentum2 * st[1] + (1 - p.momentum2) * g * g
        step = rate * math.sqrt(1 - p.momentum2 ** t) / (1 - mom ** t) * st[0] / (math.sqrt(st[1]) + d)
    return w - step


def test_history_slot_names():
    assert [history_slot(j) for j in range(3)] == ["h0", "h1", "h2"]


@pytest.mark.parametrize("reg", ["L2", "L1"])
@pytest.mark.parametrize("kind", RULES)
def test_apply_step_matches_scalar_reference(kind, reg):
    p = solver_param(kind, regularization_type=reg)
    rule = U.make_rule(p)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3))
    w[0, 0] = 0.0  # L1's sign(0) = 0
    history = U.new_history(rule, w.shape, np, w.dtype)
    ref_w = w.copy()
    ref_h = [[0.0] * rule.num_history for _ in range(w.size)]
    lr_mult, decay_mult, scale = 2.0, 0.5, 0.25
    for it in range(5):
        g = rng.normal(size=w.shape)
        rate = 0.05 * (0.5 ** it)  # any per-iteration rate: apply_step takes it as given
        flat_w = ref_w.reshape(-1)
        for e, ge in enumerate(g.reshape(-1)):
            flat_w[e] = scalar_step(kind, p, flat_w[e], ge, ref_h[e], it, rate * lr_mult,
                                    p.weight_decay * decay_mult, reg, scale)
        apply_step(rule, w, g.copy(), history, it=it, lr=rate, lr_mult=lr_mult,
                   decay=p.weight_decay, decay_mult=decay_mult, reg_type=reg, scale=scale)
        np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-14)
        for j in range(rule.num_history):
            np.testing.assert_allclose(history[j].reshape(-1), [h[j] for h in ref_h],
                                       rtol=1e-12, atol=1e-14)


def test_apply_step_leaves_the_step_in_grad():
    p = solver_param("SGD", momentum=0.0, weight_decay=0.0)
    rule = U.make_rule(p)
    w = np.array([1.0, 2.0, 3.0])
    g = np.array([1.0, -2.0, 0.5])
    apply_step(rule, w, g, U.new_history(rule, w.shape, np, w.dtype), it=0, lr=0.1, lr_mult=1.0,
               decay=0.0, decay_mult=1.0, reg_type="L2")
    np.testing.assert_allclose(g, [0.1, -0.2, 0.05])
    np.testing.assert_allclose(w, [0.9, 2.2, 2.95])


@pytest.mark.parametrize("kind", RULES)
def test_row_blocks_give_the_whole_tensor_result_bit_for_bit(kind):
    p = solver_param(kind)
    rule = U.make_rule(p)
    rng = np.random.default_rng(11)
    w_whole = rng.normal(size=(7, 5)).astype(np.float32)
    w_blocks = w_whole.copy()
    h_whole = U.new_history(rule, w_whole.shape, np, np.float32)
    h_blocks = U.new_history(rule, w_whole.shape, np, np.float32)
    kw = dict(lr=0.05, lr_mult=1.0, decay=p.weight_decay, decay_mult=1.0, reg_type="L2")
    for it in range(4):
        g = rng.normal(size=w_whole.shape).astype(np.float32)
        apply_step(rule, w_whole, g.copy(), h_whole, it=it, **kw)
        gb = g.copy()
        for r in range(0, 7, 3):  # uneven blocks: 3, 3, 1 rows
            s = slice(r, r + 3)
            apply_step(rule, w_blocks[s], gb[s], [h[s] for h in h_blocks], it=it, **kw)
    assert w_blocks.tobytes() == w_whole.tobytes()
    for a, b in zip(h_blocks, h_whole):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------------
# Part 2: the paths that change weights -- single-node Solver and the parameter server's
# SolverUpdater -- fed the same gradients end with bit-identical parameters and history.
#
# A path is ``fn(param, start, grads) -> (data, history)``: ``param`` the SolverParameter (its
# net_param is the net), ``start`` the learnable params as ``(name, data0, lr_mult, decay_mult)``,
# ``grads[t][k]`` the gradient of param k at iteration t; it returns the final data of every param
# and ``history[k][j]`` (all float32 ndarrays of the param's shape). To add a path, write such a
# function and append it to PATHS.

NET = """
name: "step_once"
layer { name: "in" type: "Input" top: "data" top: "targets"
  input_param { shape { dim: 2 dim: 7 } shape { dim: 2 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 }
                        bias_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }
"""
ITERS = 6
# 16 float32 per chunk: the 6 x 7 weight spans three chunks, one of them cut mid-row, on two shards
CHUNK_BYTES = 64


def full_param(kind, reg="L2", policy="step"):
    p = solver_param(kind, regularization_type=reg, lr_policy=policy, gamma=0.5, stepsize=2,
                     max_iter=ITERS, display=0, random_seed=5)
    p.net_param.CopyFrom(text_format.Parse(NET, caffe_pb2.NetParameter()))
    return p


def single_node(param, start, grads):
    """The reference: the Solver's own update, one iteration per gradient."""
    solver = Solver(param, xp=np, log=TrainLog([io.StringIO()], progress=False))
    for blob, (_, data0, _, _) in zip(solver.net.learnable_params, start):
        blob.data[...] = data0
    for g in grads:
        for blob, gk in zip(solver.net.learnable_params, g):
            blob.diff[...] = gk
        solver.apply_update_local()
        solver.iter += 1
    return ([b.data.copy() for b in solver.net.learnable_params],
            [[h.copy() for h in hist] for hist in solver.history])


def parameter_server(param, start, grads, shards=2):
    """One worker, ``shards`` ShardStores with the production SolverUpdater, over the store API."""
    specs = [(name, data0.shape, "float32") for name, data0, _, _ in start]
    mults = {name: (lr, dm) for name, _, lr, dm in start}
    stores = [ShardStore(i, shards, "job", SolverUpdater(param, mults, 0)) for i in range(shards)]
    for st in stores:
        st.register(0, "job", PROTOCOL_VERSION, 1, 0, shards, CHUNK_BYTES, specs)
    layout = Layout(specs, shards, CHUNK_BYTES)
    for (name, data0, _, _) in start:
        for ck in layout.by_param[name]:
            stores[ck.shard].set_value(ck.key, data0.reshape(-1)[ck.start:ck.stop])
    for t, g in enumerate(grads):
        for (name, _, _, _), gk in zip(start, g):
            for ck in layout.by_param[name]:
                stores[ck.shard].push(0, t, ck.key, gk.reshape(-1)[ck.start:ck.stop].copy())
        for st in stores:
            st.clock(0, t + 1)
    values, slots = {}, {}
    for st in stores:
        values.update(st.values())
        for key, slot, arr in st.get_solver_state():
            slots[(key, slot)] = arr
    data, history = [], []
    for name, data0, _, _ in start:
        chunks = layout.by_param[name]
        assert all(st.applied_clock(ck.key) == len(grads) for ck in chunks for st in stores
                   if ck.key in st.values())
        data.append(np.concatenate([values[ck.key] for ck in chunks]).reshape(data0.shape))
        nh = U.make_rule(param).num_history
        history.append([np.concatenate([slots[(ck.key, history_slot(j))] for ck in chunks])
                        .reshape(data0.shape) for j in range(nh)])
    return data, history


PATHS = [parameter_server]


def start_and_grads(param, seed=3):
    """Initial values and multipliers of the net's learnable params, and ITERS gradients each."""
    net = Solver(param, xp=np, log=TrainLog([io.StringIO()], progress=False)).net
    rng = np.random.default_rng(seed)
    start = [(f"ip.{k}", b.data.copy(), net.params_lr[k], net.params_weight_decay[k])
             for k, b in enumerate(net.learnable_params)]
    grads = [[rng.normal(size=b.shape).astype(np.float32) for b in net.learnable_params]
             for _ in range(ITERS)]
    return start, grads


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind,reg,policy", [(k, "L2", "step") for k in RULES]
                         + [("SGD", "L1", "multistep"), ("Adam", "L1", "inv")])
def test_every_path_gives_the_single_node_step_bit_for_bit(kind, reg, policy, path):
    param = full_param(kind, reg, policy)
    if policy == "multistep":
        param.stepvalue.extend([1, 1, 4])  # two steps due at once: the counter advances one per iteration
    if policy == "inv":
        param.power = 0.75
    start, grads = start_and_grads(param)
    ref_data, ref_hist = single_node(param, start, [[g.copy() for g in gs] for gs in grads])
    data, hist = path(param, start, [[g.copy() for g in gs] for gs in grads])
    for k, (name, data0, _, _) in enumerate(start):
        assert not np.array_equal(ref_data[k], data0), "the reference did not move"
        assert data[k].dtype == ref_data[k].dtype == np.float32
        assert data[k].tobytes() == ref_data[k].tobytes(), f"{path.__name__}: {name} data differs"
        assert len(hist[k]) == len(ref_hist[k]) == U.make_rule(param).num_history
        for j, (a, b) in enumerate(zip(hist[k], ref_hist[k])):
            assert a.tobytes() == b.tobytes(), f"{path.__name__}: {name} {history_slot(j)} differs"


def sufficient_factors(param, start, grads):
    """The SFB path, split as ``--svb`` splits a layer: the InnerProduct weight is updated by a
    ``FactorExchange`` (its capture -> rebuild -> step), the bias by the parameter server. The
    exchange rebuilds the gradient from factors, so they are chosen to give exactly the given one:
    the bottom is the K x K identity and the top diff is gᵀ (every product is g·1 or g·0)."""
    from poseidon_cli.distributed import sfb
    from poseidon_cli.net import Net

    p = caffe_pb2.SolverParameter()
    p.CopyFrom(param)
    k_in = start[0][1].shape[1]
    for shape in p.net_param.layer[0].input_param.shape:
        shape.dim[0] = k_in                         # batch rows = K: room for the identity
    net = Net(p.net_param, xp=np)
    li = net.layer_names.index("ip")
    net.learnable_params[0].data[...] = start[0][1]
    rule = U.make_rule(p)
    history = U.new_history(rule, start[0][1].shape, np, np.float32)
    plan = sfb.LayerPlan("ip", li, 0, net.learnable_param_names[0], start[0][1].shape, k_in, 0, 0, "sfb")
    ex = sfb.FactorExchange(net, [plan], lambda k: history, p, 0, 1, "job",
                            sfb.LocalFactorHub().transport())
    try:
        for t, g in enumerate(grads):
            net.blobs["data"].data[...] = np.eye(k_in, dtype=np.float32)
            net.blobs["ip"].diff[...] = g[0].T
            ex.capture(li, t)
            ex.ensure(li, t + 1)
        assert ex.applied == [len(grads)]
    finally:
        ex.close()
    bias_data, bias_hist = parameter_server(param, start[1:], [g[1:] for g in grads])
    return [net.learnable_params[0].data.copy()] + bias_data, [[h.copy() for h in history]] + bias_hist


PATHS.append(sufficient_factors)
