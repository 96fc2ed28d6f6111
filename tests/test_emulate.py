"""The compute stand-in: layers sleep for the profile's times, shapes and bytes stay real."""
import json
import subprocess
import sys

import numpy as np
import pytest

from poseidon_cli import emulate, profile
from poseidon_cli.errors import ConfigError
from poseidon_cli.net import Net

NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "/nonexistent/train_lmdb" batch_size: 8 }
        transform_param { crop_size: 6 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

TIMES = {"conv": (2.0, 3.0), "relu": (0.5, 0.25), "fc": (1.0, 4.0), "loss": (0.125, 0.0)}


def profile_doc(batch=8, times=TIMES):
    return {"net": "tiny", "device": "test", "batch": batch,
            "layers": [{"name": n, "forward_ms": f, "backward_ms": b} for n, (f, b) in times.items()]}


@pytest.fixture
def net_file(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(NET)
    return p


class FakeTime:
    """A clock that advances only when slept, by the requested time plus a fixed lateness."""

    def __init__(self, late=0.0):
        self.t, self.late, self.sleeps = 0.0, late, []

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s + self.late

    def clock(self):
        return self.t


def stand_in(net_file, doc=None, dilation=1.0, jitter=0.0):
    emu = emulate.Emulation(emulate.parse_profile(doc or profile_doc()), dilation, jitter)
    net = Net(emulate.stand_in_param(str(net_file)), "TRAIN")
    return emulate.apply(net, emu)


def test_layers_sleep_profile_times_in_execution_order(net_file):
    net = stand_in(net_file, dilation=3.0)
    fake = FakeTime()
    net.pacer._sleep, net.pacer._clock = fake.sleep, fake.clock
    seen = []
    net.add_after_backward(lambda li: seen.append(net.layer_names[li]))
    net.forward_backward()
    fwd = [TIMES[n][0] for n in net.layer_names if n in TIMES]
    bwd = [TIMES[n][1] for n in reversed(net.layer_names) if n in TIMES and TIMES[n][1] > 0]
    expected = [3.0 * ms / 1000 for ms in fwd + bwd]
    assert fake.sleeps == pytest.approx(expected)
    # the after_backward hooks that wait-free backprop uses still fire for every layer
    assert seen == list(reversed(net.layer_names))


def test_shapes_and_parameter_bytes_are_the_real_nets(net_file):
    real = Net(emulate.stand_in_param(str(net_file), 8), "TRAIN")
    net = stand_in(net_file)
    assert [b.shape for b in net.learnable_params] == [b.shape for b in real.learnable_params]
    # conv: 4 x 3 x 3 x 3 weights + 4 biases; 6x6 crop -> 4x4 maps -> fc 5 x 64 + 5
    assert [b.shape for b in net.learnable_params] == [(4, 3, 3, 3), (4,), (5, 64), (5,)]
    assert net.blobs["data"].shape == (8, 3, 6, 6)
    assert net.blobs["fc"].shape == (8, 5)
    net.pacer._sleep = lambda s: None
    before = [b.data.copy() for b in net.learnable_params]
    net.clear_param_diffs()
    net.forward_backward()
    # nothing computed: parameters unchanged, gradients stay as the solver zeroed them
    for b, w in zip(net.learnable_params, before):
        np.testing.assert_array_equal(b.data, w)
        assert not b.diff.any()


def test_lateness_is_carried_so_the_sum_holds():
    fake = FakeTime(late=0.0005)
    p = emulate.Pacer(sleep=fake.sleep, clock=fake.clock)
    for _ in range(100):
        p.spend(1.0)
    # 100 ms intended; each sleep is shortened by the previous one's lateness
    assert fake.t == pytest.approx(0.1 + 0.0005, abs=1e-9)
    assert p.spent_s == pytest.approx(0.1)


def test_lateness_carry_is_bounded():
    fake = FakeTime(late=emulate.MAX_CARRY_S + 5.0)   # a long stall is not all taken off
    p = emulate.Pacer(sleep=fake.sleep, clock=fake.clock)
    p.spend(10.0)
    p.spend(2000.0)
    assert fake.sleeps[1] == pytest.approx(2.0 - emulate.MAX_CARRY_S)


def test_lateness_carries_over_layers_shorter_than_it():
    fake = FakeTime()
    p = emulate.Pacer(sleep=fake.sleep, clock=fake.clock)
    p.spend(1.0)
    fake.t += 0.0035            # woke 3.5 ms late (a busy machine)
    p._carry = 0.0035
    for _ in range(3):
        p.spend(1.0)            # 1 ms each: skipped while the lateness lasts
    assert fake.sleeps == pytest.approx([0.001])
    p.spend(1.0)
    assert fake.sleeps[-1] == pytest.approx(0.0005)


def test_jitter_is_seeded_lognormal_per_rank():
    a = emulate.Pacer(jitter=0.2, seed=5, rank=3, sleep=lambda s: None)
    for _ in range(4):
        a.new_iteration()
    rng = np.random.default_rng([5, 3])
    assert a.factors == pytest.approx([float(np.exp(rng.normal(-0.02, 0.2))) for _ in range(4)])
    b = emulate.Pacer(jitter=0.2, seed=5, rank=4, sleep=lambda s: None)
    b.new_iteration()
    assert b.factors[0] != a.factors[0]
    many = emulate.Pacer(jitter=0.2, seed=1, rank=0, sleep=lambda s: None)
    for _ in range(4000):
        many.new_iteration()
    f = np.array(many.factors)
    assert f.mean() == pytest.approx(1.0, abs=0.02)          # mean-1 lognormal
    assert np.log(f).std() == pytest.approx(0.2, abs=0.01)


def test_jitter_scales_every_layer_of_an_iteration(net_file):
    net = stand_in(net_file, jitter=0.3)
    fake = FakeTime()
    net.pacer._sleep, net.pacer._clock = fake.sleep, fake.clock
    net.forward_backward()
    k = net.pacer.factors[0]
    total = sum(f + b for f, b in TIMES.values()) / 1000
    assert sum(fake.sleeps) == pytest.approx(k * total)


def test_make_net_is_plain_net_unless_configured(net_file, tmp_path):
    emulate.configure(None)
    with pytest.raises(Exception):   # the real Data layer needs its database
        emulate.make_net(Net, str(net_file), "TRAIN")
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(profile_doc()))
    try:
        emulate.configure(str(prof), dilation=2.0)
        net = emulate.make_net(Net, str(net_file), "TRAIN")
        assert getattr(net.layers[1], "emulated", False)
        assert net.pacer.dilation == 2.0
        assert net.layers[0].param.type == "Input"
    finally:
        emulate.configure(None)


def test_profile_that_does_not_fit_the_net(net_file):
    with pytest.raises(ConfigError, match="profile batch 16 but the net's batch is 8"):
        stand_in(net_file, profile_doc(batch=16))
    with pytest.raises(ConfigError, match="fc7"):
        stand_in(net_file, profile_doc(times={**TIMES, "fc7": (1.0, 1.0)}))


@pytest.mark.parametrize("doc, msg", [
    ({"layers": [{"name": "a"}]}, "'batch' is missing"),
    ({"batch": 0, "layers": [{"name": "a"}]}, "positive batch"),
    ({"batch": 2, "layers": []}, "'layers' must be a non-empty list"),
    ({"batch": 2, "layers": [{"forward_ms": 1}]}, r"layers\[0\] has no 'name'"),
    ({"batch": 2, "layers": [{"name": "a", "forward_ms": -1}]}, "non-negative"),
    ({"batch": 2, "layers": [{"name": "a", "backward_ms": "x"}]}, "'backward_ms' is not a number"),
    ({"batch": 2, "layers": [{"name": "a"}, {"name": "a"}]}, "appears twice"),
])
def test_malformed_profiles_name_the_field(doc, msg):
    with pytest.raises(ConfigError, match=msg):
        emulate.parse_profile(doc, where="p.json")


def test_profile_round_trip_and_totals():
    prof = emulate.parse_profile(profile_doc())
    assert prof.forward_total_ms == pytest.approx(3.625)
    assert prof.backward_total_ms == pytest.approx(7.25)
    again = emulate.parse_profile(prof.to_dict())
    assert again.order == prof.order and again.forward_ms == prof.forward_ms


def test_a_poseidon_time_profile_drives_the_stand_in(net_file):
    """What ``poseidon time --json`` writes (profile.py) is what the emulator reads."""
    net = Net(emulate.stand_in_param(str(net_file), 8), "TRAIN")
    n = len(net.layers)
    doc = profile.net_profile(net, np.arange(n) * 1.0, np.arange(n) * 2.0, device="cpu").to_json()
    prof = emulate.parse_profile(json.loads(json.dumps(doc)))
    assert prof.batch == 8 and prof.order == net.layer_names
    assert prof.backward_ms[net.layer_names[-1]] == 2.0 * (n - 1)


def test_cli_rejects_dilation_without_profile(tmp_path):
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver",
                        str(tmp_path / "s.prototxt"), "--dilation", "4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("poseidon: error: --dilation and --jitter only apply with "
                                "--emulate-compute PROFILE")


def test_cli_trains_a_stand_in_without_its_database(net_file, tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(profile_doc()))
    solver = tmp_path / "s.prototxt"
    solver.write_text(f'net: "{net_file}" base_lr: 0.1 lr_policy: "fixed" max_iter: 3 display: 1 '
                      f'snapshot_after_train: false solver_mode: CPU\n')
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", str(solver),
                        "--emulate-compute", str(prof), "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Iteration 2, loss = 0" in r.stderr


def test_test_net_of_another_batch_gets_proportional_times(net_file):
    emu = emulate.Emulation(emulate.parse_profile(profile_doc(batch=4)))
    net = emulate.apply(Net(emulate.stand_in_param(str(net_file)), "TEST"), emu)
    fake = FakeTime()
    net.pacer._sleep, net.pacer._clock = fake.sleep, fake.clock
    net.forward()
    assert sum(fake.sleeps) == pytest.approx(2.0 * sum(f for f, _ in TIMES.values()) / 1000)
