#!/usr/bin/env python
"""LeNet on the digits, the way pycaffe scripts do it (Caffe's "learning LeNet" notebook).

Written for pycaffe; the only change is the import line. It builds the nets with NetSpec
(a Python data layer feeding training, a Data layer for testing), trains with caffe.SGDSolver in
a Python loop with a callback, and classifies test images with caffe.Classifier.

    python make_data.py  (in ../digits)        # or let this script make the data
    python lenet_pycaffe.py [--data DIR] [--iters 300] [--work DIR]

Needs scikit-learn only to make the data. Prints the test accuracy; exits 1 below 85%.
"""
import argparse
import json
import os
import subprocess
import sys

import lmdb
import numpy as np

import poseidon_cli as caffe                         # was: import caffe
from poseidon_cli import layers as L, params as P    # was: from caffe import layers as L, params as P
from poseidon_cli.proto import caffe_pb2             # was: from caffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))


def lenet(source, batch_size, python_data):
    n = caffe.NetSpec()
    if python_data:
        n.data, n.label = L.Python(module="digits_layers", layer="DigitsData", ntop=2,
                                   param_str=json.dumps({"source": source, "batch_size": batch_size,
                                                         "scale": 1. / 256}))
    else:
        n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=source,
                                 transform_param=dict(scale=1. / 256), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"),
                            param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"),
                            param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=200, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    if python_data:
        n.loss = L.SoftmaxWithLoss(n.score, n.label)
    else:
        n.accuracy = L.Accuracy(n.score, n.label)
        n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def deploy():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[10, 1, 28, 28]))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50)
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=200)
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10)
    n.prob = L.Softmax(n.score)
    return n.to_proto()


def read_test_images(source):
    images, labels = [], []
    env = lmdb.open(source, readonly=True, lock=False)
    with env.begin() as txn:
        for _, value in txn.cursor():
            datum = caffe_pb2.Datum()
            datum.ParseFromString(value)
            chw = caffe.io.datum_to_array(datum)
            images.append(chw.transpose(1, 2, 0).astype(np.float32) / 255.)   # H x W x 1 in [0, 1]
            labels.append(datum.label)
    env.close()
    return images, np.array(labels)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "digits", "data"))
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--iters", type=int, default=300)
    a = ap.parse_args(argv)
    train_db = os.path.join(a.data, "digits_train_lmdb")
    test_db = os.path.join(a.data, "digits_test_lmdb")
    if not os.path.isdir(train_db):
        subprocess.check_call([sys.executable, os.path.join(HERE, "..", "digits", "make_data.py"),
                               a.data])
    os.makedirs(a.work, exist_ok=True)
    sys.path.insert(0, HERE)                  # digits_layers.py, the Python data layer
    os.chdir(a.work)

    with open("lenet_train.prototxt", "w") as f:
        f.write(str(lenet(train_db, 50, python_data=True)))
    with open("lenet_test.prototxt", "w") as f:
        f.write(str(lenet(test_db, 99, python_data=False)))
    with open("lenet_deploy.prototxt", "w") as f:
        f.write(str(deploy()))

    s = caffe_pb2.SolverParameter()
    s.train_net = "lenet_train.prototxt"
    s.test_net.append("lenet_test.prototxt")
    s.test_iter.append(3)
    s.test_interval = a.iters + 1              # tests run from the loop below
    s.base_lr = 0.01
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = "inv"
    s.gamma = 1e-4
    s.power = 0.75
    s.display = 0
    s.max_iter = a.iters
    s.snapshot_prefix = "lenet"
    s.random_seed = 1701
    with open("lenet_solver.prototxt", "w") as f:
        f.write(str(s))

    # Read the test images now: LMDB refuses a second open of a database in one process, and
    # the solver's test net keeps this one open.
    images, labels = read_test_images(test_db)

    caffe.set_mode_cpu()
    solver = caffe.SGDSolver("lenet_solver.prototxt")
    print("blobs:", [(k, v.data.shape) for k, v in solver.net.blobs.items()])
    print("params:", [(k, v[0].data.shape) for k, v in solver.net.params.items()])

    grad_norms = []
    solver.add_callback(lambda: None,
                        lambda: grad_norms.append(float(np.abs(solver.net.params["conv1"][0].diff).sum())))
    train_loss = np.zeros(a.iters)
    test_acc = []
    for it in range(a.iters):
        solver.step(1)
        train_loss[it] = solver.net.blobs["loss"].data
        if it % 100 == 0 or it == a.iters - 1:
            correct = 0
            for _ in range(3):
                solver.test_nets[0].forward()
                correct += (solver.test_nets[0].blobs["score"].data.argmax(1)
                            == solver.test_nets[0].blobs["label"].data).sum()
            test_acc.append(correct / 297.)
            print(f"iteration {it}: train loss {train_loss[it]:.4f}, test accuracy {test_acc[-1]:.4f}, "
                  f"lr {solver.lr:.5f}")
    assert len(grad_norms) == a.iters and solver.iter == a.iters
    solver.net.save("lenet.caffemodel")

    clf = caffe.Classifier("lenet_deploy.prototxt", "lenet.caffemodel", image_dims=(28, 28),
                           raw_scale=255, input_scale=1. / 256)
    probs = clf.predict(images, oversample=False)
    accuracy = float((probs.argmax(1) == labels).mean())
    crops = clf.predict(images[:4])            # 10 crops each, averaged
    print(f"Classifier accuracy on {len(images)} test images: {accuracy:.4f} "
          f"(oversampled predictions for 4 images: {crops.argmax(1).tolist()}, labels "
          f"{labels[:4].tolist()})")
    return 0 if accuracy > 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
