"""Small ONNX models in the shapes insightface expects from antelopev2, and photos they can read.

The detector reads a synthetic face: a "marker" cell of 8x8 pixels (red 255, blue 0) at the face
centre whose green value is the face's half-size in pixels. It outputs SCRFD's 9 tensors (3 strides x
score, box distances, 5 keypoints, 2 anchors per cell); only stride 8 ever fires. The recognition model
is a fixed random projection of the 112x112 aligned face to 512 dimensions (norm about 20-30, like
ArcFace's raw output), so different pixels give different embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Keypoints (x, y) relative to the box centre, in units of the half-size: eyes, nose, mouth corners.
KEYPOINTS = np.array([[-0.35, -0.2], [0.35, -0.2], [0.0, 0.1], [-0.3, 0.4], [0.3, 0.4]], dtype=np.float32)
STRIDES = (8, 16, 32)
ANCHORS = 2


def _detector() -> object:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    inits = []
    outputs: dict[str, list[object]] = {"score": [], "bbox": [], "kps": []}
    # Per stride: one conv averaging each cell computes all 15 channels as affine maps of R, G, B.
    for stride in STRIDES:
        live = stride == 8
        channels = 15
        weight = np.zeros((channels, 3, stride, stride), dtype=np.float32)
        bias = np.zeros(channels, dtype=np.float32)
        cell = 1.0 / (stride * stride)
        # Blob values are (v - 127.5) / 128 with channels in RGB order.
        if live:
            weight[0, 0] = 20 * cell
            weight[0, 2] = -20 * cell
            bias[0] = -30.0  # sigmoid(20 * (r - b) - 30): ~1 on the marker, ~0 on anything else
        else:
            bias[0] = -30.0
        # Half-size in pixels is the marker's green value: g * 128 + 127.5; outputs are in stride units.
        half = (128.0 * cell / stride, 127.5 / stride)
        for c in range(1, 5):
            weight[c, 1] = half[0]
            bias[c] = half[1]
        for k in range(5):
            for axis in range(2):
                ratio = KEYPOINTS[k, axis]
                weight[5 + 2 * k + axis, 1] = ratio * half[0]
                bias[5 + 2 * k + axis] = ratio * half[1]
        w_name, b_name = f"w{stride}", f"b{stride}"
        inits += [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)]
        conv, per_cell, both, flat = f"conv{stride}", f"cell{stride}", f"anchors{stride}", f"flat{stride}"
        nodes.append(helper.make_node("Conv", ["input.1", w_name, b_name], [conv], strides=[stride, stride]))
        nodes.append(helper.make_node("Transpose", [conv], [f"t{stride}"], perm=[0, 2, 3, 1]))
        shape_c = f"shape_c{stride}"
        inits.append(numpy_helper.from_array(np.array([-1, channels], dtype=np.int64), shape_c))
        nodes.append(helper.make_node("Reshape", [f"t{stride}", shape_c], [per_cell]))
        nodes.append(helper.make_node("Concat", [per_cell] * ANCHORS, [both], axis=1))
        nodes.append(helper.make_node("Reshape", [both, shape_c], [flat]))
        split = f"split{stride}"
        inits.append(numpy_helper.from_array(np.array([1, 4, 10], dtype=np.int64), split))
        raw_score = f"raw_score{stride}"
        names = [raw_score, f"bbox_{stride}", f"kps_{stride}"]
        nodes.append(helper.make_node("Split", [flat, split], names, axis=1))
        nodes.append(helper.make_node("Sigmoid", [raw_score], [f"score_{stride}"]))
        rows = f"n{stride}"
        outputs["score"].append(helper.make_tensor_value_info(f"score_{stride}", TensorProto.FLOAT, [rows, 1]))
        outputs["bbox"].append(helper.make_tensor_value_info(f"bbox_{stride}", TensorProto.FLOAT, [rows, 4]))
        outputs["kps"].append(helper.make_tensor_value_info(f"kps_{stride}", TensorProto.FLOAT, [rows, 10]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _recognition(seed: int = 0) -> object:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    proj = (rng.standard_normal((3 * 8 * 8, 512)) * 0.25).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        initializer=[numpy_helper.from_array(proj, "proj")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_antelope_dir(path: Path) -> Path:
    """The two antelopev2 files PuLID uses, under their real names."""
    import onnx

    path.mkdir(parents=True, exist_ok=True)
    onnx.save(_detector(), str(path / "scrfd_10g_bnkps.onnx"))
    onnx.save(_recognition(), str(path / "glintr100.onnx"))
    return path


def face_photo(
    size: int = 256,
    faces: tuple[tuple[int, int, int], ...] = ((128, 128, 48),),
    tone: tuple[int, int, int] = (200, 170, 150),
    seed: int = 0,
) -> np.ndarray:
    """An RGB photo with a textured "face" square per (cx, cy, half) and its detector marker.

    Centres must be multiples of 8 so the marker fills one detector cell exactly.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    for cx, cy, half in faces:
        patch = np.clip(np.array(tone) + rng.integers(-30, 30, size=(2 * half, 2 * half, 3)), 0, 230)
        image[cy - half : cy + half, cx - half : cx + half] = patch.astype(np.uint8)
        image[cy : cy + 8, cx : cx + 8] = (255, half, 0)
    return image
