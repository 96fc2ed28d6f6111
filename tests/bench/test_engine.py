"""bench/engine.py: the PyTorch twin replays the same graph as our net (branches, Concat, three
weighted losses), so the GPU comparison times the same work on both sides."""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

torch = pytest.importorskip("torch")
import engine  # noqa: E402

from poseidon_cli import backend  # noqa: E402


# Relative error of our float32 conv1 weight gradient against float64: float32 rounding through 8
# (AlexNet) or 22 (GoogLeNet) layers of backward. ResNet-50 at batch 2: the batch-statistics
# BatchNorm backward subtracts two nearly equal means per channel (98 values at the last stage),
# which leaves a few percent at the first convolution; its loss, which the forward semantics
# decide, agrees to 1e-4.
# AlexNet: conv5's output holds near-ties inside a 3x3 max-pooling window (two values 1e-8 apart); the
# BLAS kernel's float32 rounding decides which wins, and the gradient is discontinuous there, so one
# entry of conv5's diff moves to its neighbour: 9e-7 under OpenBLAS's Haswell kernel, 5e-3 under
# SkylakeX (checked: 2 of 86528 conv5 diff entries differ, swapped). A wrong backward gives O(1).
TOL = {"googlenet": 5e-3, "alexnet": 1e-2, "cifar10_full": 1e-4, "resnet_50": 5e-2}


def _no_dropout(param):
    for lp in param.layer:
        if lp.type == "Dropout":
            lp.dropout_param.dropout_ratio = 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("googlenet", (1, 3, 224, 224)),
                                         ("alexnet", (2, 3, 227, 227)),
                                         ("cifar10_full", (4, 3, 32, 32)),
                                         ("resnet_50", (2, 3, 224, 224))])
def test_torch_twin_computes_our_loss_and_gradients(conformance_dir, name, shape):
    rel = {n: r for n, r, *_ in engine.NETS}[name]
    net = engine.build_ours(rel, shape, np, conformance_dir, edit=_no_dropout)
    net.blobs["label"].data[...] = np.arange(shape[0]) % 10
    # The reference is the twin in float64: float32 oneDNN kernels are not always exact (on an
    # AVX2-only AMD machine its AlexNet conv1 weight gradient was 1.5% off float64, ours 1e-6).
    step = engine.build_torch(net, torch, "cpu", dtype=torch.float64)
    net.clear_param_diffs()
    ours = net.forward_backward()
    theirs = float(step().detach())
    # GoogLeNet: loss1 and loss2 weigh 0.3, loss3 1.0 (all summed in ours)
    assert theirs == pytest.approx(ours, rel=1e-4)
    first_conv = next(l for l in net.layers if l.type == "Convolution")
    ours_grad = backend.to_host(first_conv.blobs[0].diff).astype(np.float64)
    theirs_grad = step.params[0].grad.numpy()
    assert ours_grad.shape == theirs_grad.shape
    err = np.linalg.norm(ours_grad - theirs_grad) / np.linalg.norm(theirs_grad)
    assert err < TOL[name]


def test_batch_overrides_and_bad_usage(capsys):
    ap = engine.argparse.ArgumentParser()
    assert engine.parse_batches(["alexnet=8", "googlenet=2"], ap) == {"alexnet": 8,
                                                                     "googlenet": 2}
    for bad in ("alexnet=0", "vgg=4", "alexnet"):
        with pytest.raises(SystemExit) as exc:
            engine.parse_batches([bad], ap)
        assert exc.value.code == 2
    assert "give NET=N" in capsys.readouterr().err


def test_device_gpu_without_a_gpu_exits_3(capsys, conformance_dir):
    if backend.gpu_available() and torch.cuda.is_available():
        pytest.skip("a GPU exists here")
    with pytest.raises(SystemExit) as exc:
        engine.main(["--device", "gpu", "--nets", "lenet", "--conformance", str(conformance_dir)])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "no usable GPU" in err and err.count("\n") == 1


def test_blas_env_forced_is_kept_only_when_asked():
    import blas_env
    assert blas_env.keeps_forced(["engine.py", "--nets", "lenet", "--blas-env", "forced"])
    assert blas_env.keeps_forced(["engine.py", "--blas-env=forced"])
    assert not blas_env.keeps_forced(["engine.py", "--blas-env", "native"])
    assert not blas_env.keeps_forced(["engine.py", "--nets", "forced"])
    assert not blas_env.keeps_forced(["engine.py", "--blas-env"])
