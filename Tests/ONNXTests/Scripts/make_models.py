#!/usr/bin/env python3
"""Test assets for the ONNX importer/exporter, generated at test time (nothing here is committed output).

  make_models.py build OUT_DIR [--pytorch-model PATH]
      Builds one-op models for every op the importer supports, exporter idioms (Constant nodes, Shape chains,
      Clip/Pad/Reshape/Dropout constant inputs), a small mixed net, MobileNetV2-224 (random weights, BN kept),
      error models (LSTM, dilations, auto_pad, reflect pad), random inputs and ONNX Runtime outputs.
      Writes OUT_DIR/manifest.json describing every case.

  make_models.py run OUT_DIR SUB_DIR
      Runs ONNX Runtime on SUB_DIR/<case>.onnx (written by the Swift tests, e.g. exported models) with each case's
      inputs and writes SUB_DIR/<case>.out<k>.f32 plus SUB_DIR/results.json ({case: {"ok", "error"}}).

Tensors are raw little-endian float32 files; shapes are in the manifest.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# Why a fixed seed: a failing comparison must be reproducible run after run.
RNG = np.random.default_rng(20261127)
BATCH = 2


def ir_version_for(opset):
    return 6 if opset <= 11 else 7 if opset <= 14 else 8


def floats(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def ort_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    # No graph optimizations: the reference is the plain ONNX semantics, not ORT's fused kernels.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def write_f32(path, array):
    np.ascontiguousarray(array, dtype="<f4").tofile(path)


class Builder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.cases = []

    def model(self, name, nodes, inputs, outputs, initializers=(), opset=13, input_shapes=None, tags=()):
        """Saves a model, random inputs (batch 2 for dynamic N) and ORT's outputs."""
        graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qatflow-tests")
        model.ir_version = ir_version_for(opset)
        # No onnx.checker here: it insists on output shapes, which exporters may omit (the importer must cope);
        # ONNX Runtime validates the model when it loads it below.
        path = os.path.join(self.out_dir, name + ".onnx")
        onnx.save(model, path)
        self.reference(name, path, opset, input_shapes, tags)

    def reference(self, name, path, opset, input_shapes=None, tags=()):
        session = ort_session(path)
        feeds, inputs = {}, []
        for index, meta in enumerate(session.get_inputs()):
            shape = (input_shapes or {}).get(meta.name) or [BATCH if not isinstance(d, int) else d for d in meta.shape]
            array = floats(*shape)
            feeds[meta.name] = array
            file = f"{name}.in{index}.f32"
            write_f32(os.path.join(self.out_dir, file), array)
            inputs.append({"name": meta.name, "shape": list(shape), "file": file})
        results = session.run(None, feeds)
        outputs = []
        for index, (meta, array) in enumerate(zip(session.get_outputs(), results)):
            file = f"{name}.out{index}.f32"
            write_f32(os.path.join(self.out_dir, file), array)
            outputs.append({"name": meta.name, "shape": list(array.shape), "file": file})
        self.cases.append({"name": name, "kind": "model", "file": path, "opset": opset,
                           "inputs": inputs, "outputs": outputs, "tags": list(tags)})

    def error_model(self, name, nodes, inputs, outputs, initializers=(), opset=13, expect=()):
        """A model the importer must reject; `expect` lists substrings of the error message."""
        graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qatflow-tests")
        model.ir_version = ir_version_for(opset)
        path = os.path.join(self.out_dir, name + ".onnx")
        onnx.save(model, path)
        self.cases.append({"name": name, "kind": "error", "file": path, "opset": opset, "expect": list(expect),
                           "inputs": [], "outputs": [], "tags": []})


def one_op_models(b):
    """One model per supported op and per importer normalisation."""
    x4 = lambda c, h, w: value("x", ["N", c, h, w])
    y = value("y", None)

    b.model("conv_basic", [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
            [x4(3, 8, 8)], [value("y", ["N", 8, 8, 8])], [tensor("w", floats(8, 3, 3, 3, scale=0.3)), tensor("b", floats(8))])
    b.model("conv_stride2_asymmetric_pads", [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", strides=[2, 2], pads=[1, 0, 2, 1], kernel_shape=[3, 3])],
            [x4(3, 9, 10)], [y], [tensor("w", floats(5, 3, 3, 3, scale=0.3)), tensor("b", floats(5))])
    b.model("conv_groups", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2, pads=[1, 1, 1, 1])],
            [x4(4, 7, 7)], [y], [tensor("w", floats(6, 2, 3, 3, scale=0.3))])
    b.model("conv_depthwise_stride2", [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="dw", group=8, strides=[2, 2], pads=[1, 1, 1, 1])],
            [x4(8, 9, 9)], [y], [tensor("w", floats(8, 1, 3, 3, scale=0.3)), tensor("b", floats(8))])
    b.model("conv_pointwise_valid", [helper.make_node("Conv", ["x", "w"], ["y"], name="pw", auto_pad="VALID")],
            [x4(6, 5, 5)], [y], [tensor("w", floats(4, 6, 1, 1, scale=0.3))])
    b.model("conv_weights_through_identity", [
        helper.make_node("Identity", ["w0"], ["w"], name="shared_weight"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        [x4(2, 5, 5)], [y], [tensor("w0", floats(3, 2, 3, 3, scale=0.3))])

    bn = [tensor("scale", floats(4) * 0.2 + 1), tensor("bias", floats(4) * 0.1),
          tensor("mean", floats(4) * 0.1), tensor("var", np.abs(floats(4)) + 0.5)]
    b.model("batchnorm", [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], name="bn", epsilon=1e-3)],
            [x4(4, 5, 5)], [y], bn, opset=15)
    b.model("relu", [helper.make_node("Relu", ["x"], ["y"], name="relu")], [x4(3, 4, 4)], [y])

    b.model("clip_initializers", [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
            [x4(3, 4, 4)], [y], [tensor("lo", np.float32(-0.5)), tensor("hi", np.float32(0.7))])
    b.model("clip_constant_nodes", [
        helper.make_node("Constant", [], ["lo"], name="c_lo", value=tensor("lo_value", np.float32(0.0))),
        helper.make_node("Constant", [], ["hi"], name="c_hi", value_float=6.0),
        helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")],
        [x4(3, 4, 4)], [y], opset=11, input_shapes={"x": [BATCH, 3, 4, 4]})
    b.model("clip_max_only", [helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")],
            [x4(3, 4, 4)], [y], [tensor("hi", np.float32(0.25))])

    b.model("add_broadcast_initializer", [helper.make_node("Add", ["x", "c"], ["y"], name="add")],
            [x4(4, 5, 5)], [y], [tensor("c", floats(4, 1, 1))])
    b.model("add_two_inputs_broadcast", [helper.make_node("Add", ["x", "z"], ["y"], name="add")],
            [x4(4, 5, 5), value("z", ["N", 4, 1, 1])], [y])
    b.model("mul_broadcast", [helper.make_node("Mul", ["x", "s"], ["y"], name="mul")],
            [x4(4, 5, 5)], [y], [tensor("s", floats(1, 4, 1, 1))])

    b.model("global_average_pool", [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")], [x4(5, 6, 7)], [y])
    b.model("average_pool", [helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
            [x4(3, 9, 9)], [y])
    b.model("average_pool_include_pad", [helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1)],
            [x4(3, 7, 7)], [y])
    b.model("max_pool", [helper.make_node("MaxPool", ["x"], ["y"], name="max", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
            [x4(3, 9, 9)], [y])
    b.model("max_pool_ceil", [helper.make_node("MaxPool", ["x"], ["y"], name="max", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
            [x4(3, 7, 7)], [y])
    b.model("average_pool_ceil", [helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)],
            [x4(3, 8, 10)], [y])

    b.model("gemm_transb", [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
            [value("x", ["N", 16])], [y], [tensor("w", floats(10, 16, scale=0.3)), tensor("b", floats(10))])
    b.model("gemm_plain", [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")],
            [value("x", ["N", 16])], [y], [tensor("w", floats(16, 10, scale=0.3)), tensor("b", floats(10))])
    b.model("matmul", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
            [value("x", ["N", 16])], [y], [tensor("w", floats(16, 8, scale=0.3))])
    b.model("flatten", [helper.make_node("Flatten", ["x"], ["y"], name="flat", axis=1)], [x4(4, 3, 3)], [y])

    b.model("reshape_initializer", [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
            [x4(4, 3, 3)], [y], [tensor("shape", np.array([0, -1], dtype=np.int64))])
    # PyTorch's x.view(x.size(0), -1) at opset 13: Unsqueeze takes axes as an input.
    b.model("reshape_shape_chain", [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")],
        [x4(4, 3, 3)], [y], [tensor("i0", np.int64(0)), tensor("axes0", np.array([0], dtype=np.int64)),
                             tensor("minus1", np.array([-1], dtype=np.int64))])
    # The opset-11 flavour: Constant nodes and Unsqueeze's axes attribute; the flattened size comes from the shape too.
    b.model("reshape_shape_chain_opset11", [
        helper.make_node("Constant", [], ["i0"], name="c0", value=tensor("i0v", np.int64(0))),
        helper.make_node("Constant", [], ["i1"], name="c1", value=tensor("i1v", np.int64(1))),
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="gather_n", axis=0),
        helper.make_node("Gather", ["s", "i1"], ["c"], name="gather_c", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsqueeze_n", axes=[0]),
        helper.make_node("Unsqueeze", ["c"], ["c1"], name="unsqueeze_c", axes=[0]),
        helper.make_node("Concat", ["n1", "c1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")],
        [x4(4, 3, 3)], [y], [tensor("minus1", np.array([-1], dtype=np.int64))], opset=11)

    b.model("dropout_ratio_input", [helper.make_node("Dropout", ["x", "ratio"], ["y"], name="drop")],
            [x4(3, 4, 4)], [y], [tensor("ratio", np.float32(0.3))])
    b.model("dropout_opset11_with_mask", [helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop", ratio=0.2)],
            [x4(3, 4, 4)], [y], opset=11)
    b.model("identity", [helper.make_node("Identity", ["x"], ["y"], name="id")], [x4(3, 4, 4)], [y])
    b.model("concat", [helper.make_node("Concat", ["x", "z"], ["y"], name="cat", axis=1)],
            [x4(2, 4, 4), value("z", ["N", 3, 4, 4])], [y])
    b.model("softmax", [helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=-1)], [value("x", ["N", 10])], [y])
    b.model("softmax_opset11", [helper.make_node("Softmax", ["x"], ["y"], name="softmax")], [value("x", ["N", 10])], [y], opset=11)
    b.model("pad_constant", [helper.make_node("Pad", ["x", "pads", "v"], ["y"], name="pad", mode="constant")],
            [x4(3, 4, 5)], [y], [tensor("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64)), tensor("v", np.float32(0.5))])
    b.model("pad_opset18_axes", [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad")],
            [x4(3, 4, 5)], [y], [tensor("pads", np.array([1, 0, 1, 3], dtype=np.int64)), tensor("axes", np.array([2, 3], dtype=np.int64))], opset=18)
    b.model("quantize_dequantize", [
        helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "qs", "qz"], ["y"], name="dequant")],
        [x4(3, 4, 4)], [y], [tensor("qs", np.float32(0.02)), tensor("qz", np.uint8(128))], tags=["qdq"])


def conv_bn_act(nodes, inits, prefix, x, cin, cout, k, stride, groups, act, clip_bounds):
    """Conv (no bias) → BatchNormalization → optional ReLU6 (as Clip with shared bound initializers)."""
    fan_in = cin // groups * k * k
    inits.append(tensor(prefix + ".w", floats(cout, cin // groups, k, k, scale=np.sqrt(2.0 / fan_in))))
    inits += [tensor(prefix + ".bn.scale", RNG.uniform(0.5, 1.5, cout).astype(np.float32)),
              tensor(prefix + ".bn.bias", floats(cout, scale=0.1)),
              tensor(prefix + ".bn.mean", floats(cout, scale=0.1)),
              tensor(prefix + ".bn.var", RNG.uniform(0.5, 1.5, cout).astype(np.float32))]
    nodes.append(helper.make_node("Conv", [x, prefix + ".w"], [prefix + ".conv"], name=prefix + ".conv",
                                  kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups))
    nodes.append(helper.make_node("BatchNormalization", [prefix + ".conv", prefix + ".bn.scale", prefix + ".bn.bias",
                                                         prefix + ".bn.mean", prefix + ".bn.var"], [prefix + ".bn"],
                                  name=prefix + ".bn", epsilon=1e-5))
    if not act:
        return prefix + ".bn"
    nodes.append(helper.make_node("Clip", [prefix + ".bn"] + clip_bounds, [prefix + ".act"], name=prefix + ".relu6"))
    return prefix + ".act"


def mobilenet_v2(b):
    """MobileNetV2 width 1.0 for 3×224×224, 1000 classes, random weights, BN kept (torchvision's layout)."""
    nodes, inits = [], [tensor("relu6.min", np.float32(0)), tensor("relu6.max", np.float32(6))]
    bounds = ["relu6.min", "relu6.max"]
    x = conv_bn_act(nodes, inits, "features.0", "input", 3, 32, 3, 2, 1, True, bounds)
    cin, block = 32, 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden, prefix, y = cin * t, f"features.{block}", x
            if t != 1:
                y = conv_bn_act(nodes, inits, prefix + ".expand", y, cin, hidden, 1, 1, 1, True, bounds)
            y = conv_bn_act(nodes, inits, prefix + ".dw", y, hidden, hidden, 3, stride, hidden, True, bounds)
            y = conv_bn_act(nodes, inits, prefix + ".project", y, hidden, c, 1, 1, 1, False, bounds)
            if stride == 1 and cin == c:
                nodes.append(helper.make_node("Add", [x, y], [prefix + ".add"], name=prefix + ".add"))
                y = prefix + ".add"
            x, cin, block = y, c, block + 1
    x = conv_bn_act(nodes, inits, "features.18", x, cin, 1280, 1, 1, 1, True, bounds)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Dropout", ["flat", "dropout.ratio"], ["dropped"], name="classifier.dropout"))
    # Small classifier weights keep the logits near 1, so a 1e-4 absolute tolerance is a meaningful relative one.
    inits += [tensor("dropout.ratio", np.float32(0.2)),
              tensor("classifier.w", floats(1000, 1280, scale=0.01)), tensor("classifier.b", floats(1000, scale=0.01))]
    nodes.append(helper.make_node("Gemm", ["dropped", "classifier.w", "classifier.b"], ["logits"], name="classifier", transB=1))
    b.model("mobilenetv2_224", nodes, [value("input", ["N", 3, 224, 224])], [value("logits", ["N", 1000])], inits,
            input_shapes={"input": [1, 3, 224, 224]}, tags=["large"])


def mixed_net(b):
    """A small PyTorch-style net: Conv-BN-ReLU, depthwise Conv-BN-ReLU6 (Constant bounds), MaxPool, GAP, the
    x.view(x.size(0), -1) shape chain, Dropout, Gemm, Softmax — the idioms the importer folds, in one graph."""
    nodes, inits = [], []
    nodes.append(helper.make_node("Constant", [], ["zero"], name="const_zero", value=tensor("zero_v", np.float32(0))))
    nodes.append(helper.make_node("Constant", [], ["six"], name="const_six", value=tensor("six_v", np.float32(6))))
    x = conv_bn_act(nodes, inits, "block1", "x", 3, 8, 3, 1, 1, False, [])
    nodes.append(helper.make_node("Relu", [x], ["block1.relu"], name="block1.relu"))
    x = conv_bn_act(nodes, inits, "block2", "block1.relu", 8, 8, 3, 2, 8, True, ["zero", "six"])
    nodes.append(helper.make_node("MaxPool", [x], ["pooled"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("GlobalAveragePool", ["pooled"], ["gap"], name="gap"))
    nodes += [helper.make_node("Shape", ["gap"], ["gap_shape"], name="shape"),
              helper.make_node("Constant", [], ["index0"], name="const_index0", value=tensor("i0", np.int64(0))),
              helper.make_node("Gather", ["gap_shape", "index0"], ["batch"], name="gather", axis=0),
              helper.make_node("Constant", [], ["axes0"], name="const_axes0", value=tensor("a0", np.array([0], dtype=np.int64))),
              helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="unsqueeze"),
              helper.make_node("Constant", [], ["minus1"], name="const_minus1", value=tensor("m1", np.array([-1], dtype=np.int64))),
              helper.make_node("Concat", ["batch1", "minus1"], ["flat_shape"], name="concat", axis=0),
              helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="reshape"),
              helper.make_node("Dropout", ["flat"], ["dropped"], name="dropout"),
              helper.make_node("Gemm", ["dropped", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
              helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1)]
    inits += [tensor("fc.w", floats(5, 8, scale=0.3)), tensor("fc.b", floats(5))]
    b.model("mixed_pytorch_style", nodes, [value("x", ["N", 3, 12, 12])], [value("probabilities", ["N", 5])], inits)

    # What an exporter writes after folding BN into Conv itself: Conv with bias, no BatchNormalization anywhere.
    b.model("conv_bn_prefolded", [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)],
        [value("x", ["N", 3, 8, 8])], [value("y", ["N", 4])],
        [tensor("w", floats(6, 3, 3, 3, scale=0.3)), tensor("b", floats(6)), tensor("fc.w", floats(4, 6)), tensor("fc.b", floats(4))])


def error_models(b):
    hidden = 8
    b.error_model("lstm", [helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="encoder_lstm", hidden_size=hidden)],
                  [value("x", [5, "N", 4])], [value("y", None)],
                  [tensor("W", floats(1, 4 * hidden, 4)), tensor("R", floats(1, 4 * hidden, hidden))],
                  opset=14, expect=["LSTM", "encoder_lstm", "opset 14"])
    b.error_model("conv_dilations", [helper.make_node("Conv", ["x", "w"], ["y"], name="dilated_conv", dilations=[2, 2])],
                  [value("x", ["N", 2, 9, 9])], [value("y", None)], [tensor("w", floats(2, 2, 3, 3))],
                  expect=["dilated_conv", "dilations", "expected all 1"])
    b.error_model("conv_auto_pad_same", [helper.make_node("Conv", ["x", "w"], ["y"], name="same_conv", auto_pad="SAME_UPPER")],
                  [value("x", ["N", 2, 9, 9])], [value("y", None)], [tensor("w", floats(2, 2, 3, 3))],
                  expect=["same_conv", "SAME_UPPER", "NOTSET"])
    b.error_model("pad_reflect", [helper.make_node("Pad", ["x", "pads"], ["y"], name="reflect_pad", mode="reflect")],
                  [value("x", ["N", 2, 4, 4])], [value("y", None)], [tensor("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))],
                  expect=["reflect_pad", "reflect", "expected 'constant'"])
    b.error_model("average_pool_ceil_include_pad", [helper.make_node("AveragePool", ["x"], ["y"], name="ceil_avg", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, count_include_pad=1)],
                  [value("x", ["N", 2, 7, 7])], [value("y", None)], expect=["ceil_avg", "count_include_pad=1", "expected ceil_mode 0"])
    b.error_model("opset_10", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                  [value("x", ["N", 2])], [value("y", None)], opset=10, expect=["opset 10", "11"])


def build(out_dir, pytorch_model):
    os.makedirs(out_dir, exist_ok=True)
    b = Builder(out_dir)
    one_op_models(b)
    mixed_net(b)
    mobilenet_v2(b)
    error_models(b)
    if pytorch_model:
        b.reference("pytorch_mobilenetv2_fmnist", os.path.abspath(pytorch_model), 13,
                    input_shapes={"input": [BATCH, 1, 32, 32]}, tags=["pytorch"])
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "cases": b.cases}, f, indent=1)
    print(f"wrote {len(b.cases)} cases to {out_dir}")


def run(out_dir, sub_dir):
    with open(os.path.join(out_dir, "manifest.json")) as f:
        cases = json.load(f)["cases"]
    results = {}
    for case in cases:
        path = os.path.join(sub_dir, case["name"] + ".onnx")
        if case["kind"] != "model" or not os.path.exists(path):
            continue
        try:
            onnx.checker.check_model(onnx.load(path))
            session = ort_session(path)
            feeds = {i["name"]: np.fromfile(os.path.join(out_dir, i["file"]), dtype="<f4").reshape(i["shape"]) for i in case["inputs"]}
            for index, array in enumerate(session.run(None, feeds)):
                write_f32(os.path.join(sub_dir, f"{case['name']}.out{index}.f32"), array)
            results[case["name"]] = {"ok": True}
        except Exception as error:  # reported per case by the Swift test
            results[case["name"]] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    with open(os.path.join(sub_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"ran {len(results)} models in {sub_dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build")
    build_parser.add_argument("out_dir")
    build_parser.add_argument("--pytorch-model")
    run_parser = commands.add_parser("run")
    run_parser.add_argument("out_dir")
    run_parser.add_argument("sub_dir")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out_dir, args.pytorch_model)
    else:
        run(args.out_dir, args.sub_dir)


if __name__ == "__main__":
    sys.exit(main())
