"""Graph rewrites of an exported ONNX graph into onnxruntime's fused CPU kernels (issue 21): fewer, larger ops per
decode step, where the time of small ops (~10 us each at batch 1) exceeded that of the weight matmuls in int8.

`fuse_onnx_graph` rewrites, in place:
- RMSNorm (`Pow(x, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x) -> Mul(weight)`, how the dynamo
  exporter writes `HybridGRURMSNorm`) into one `SimplifiedLayerNormalization` (onnxruntime's RMSNorm), and one with
  the residual `Add` before it into com.microsoft `SkipSimplifiedLayerNormalization`;
- the GRU mixer's short causal conv (`Concat(past, x) -> Conv` depthwise, and the `Slice` of its last `kernel - 1`
  inputs, the next state) into one com.microsoft `CausalConvWithState`. onnxruntime's grouped `Conv` ran one small
  GEMM per channel;
- weight matmuls that share their input (an MLP's gate and up projections, attention's q, k and v) into one matmul
  by the weights side by side and a `Split`.

A pattern that does not match exactly (another dtype's casts, other attributes) is left as it is.
"""

import numpy

MICROSOFT = "com.microsoft"


def fuse_onnx_graph(model) -> dict[str, int]:
    """Rewrites `model` (an onnx ModelProto) in place; returns the number of rewrites of each kind."""
    graph = model.graph
    counts = {"rms_norm": _fuse_rms_norms(graph)}  # first: the skip fusion reads its output
    counts["skip_rms_norm"] = _fuse_skip_rms_norms(graph)
    counts["causal_conv"] = _fuse_causal_convs(graph)
    counts["merged_matmuls"] = _merge_sibling_matmuls(graph)
    counts["dead_nodes"] = _remove_dead_nodes(graph)  # e.g. the index arithmetic of the conv state's old Slice
    uses_microsoft = any(node.domain == MICROSOFT for node in graph.node)
    if uses_microsoft and not any(o.domain == MICROSOFT for o in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    return counts


class _Graph:
    """Producers, consumers and constant initializers of a graph's top level."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.constants = {name: numpy_helper.to_array(i) for name, i in self.initializers.items() if _small(i)}
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.producers = {o: n for n in graph.node for o in n.output}

    def only_consumer(self, name: str, op_type: str):
        """The single consumer of `name` if it is an `op_type` node and `name` is no graph output, else None."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in self.outputs:
            return None
        return users[0]

    def constant(self, name: str):
        return self.constants.get(name)

    def other_input(self, node, name: str) -> str | None:
        """The input of a two-input node that is not `name`."""
        inputs = list(node.input)
        if len(inputs) != 2 or name not in inputs:
            return None
        return inputs[1 - inputs.index(name)]


def _small(initializer) -> bool:
    size = 1
    for d in initializer.dims:
        size *= d
    return size <= 16


def _float_tensor(initializer, rank: int) -> bool:
    """A float32 initializer of that rank: the fused kernels' CPU type (a half-precision graph keeps its ops)."""
    from onnx import TensorProto

    return initializer.data_type == TensorProto.FLOAT and len(initializer.dims) == rank


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewrite_each(graph, op_type: str, rewrite) -> int:
    """Applies `rewrite(g, node)` to every `op_type` node of the graph: it returns (old nodes, new nodes) where the
    node starts a pattern, else None. One index `g` serves the whole pass (the patterns it replaces are disjoint).
    Returns the number of rewrites."""
    g, count = _Graph(graph), 0
    for node in [n for n in graph.node if n.op_type == op_type]:
        change = rewrite(g, node)
        if change is not None:
            _replace(graph, *change)
            count += 1
    return count


def _fuse_rms_norms(graph) -> int:
    return _rewrite_each(graph, "Pow", _rms_norm_rewrite)


def _rms_norm_rewrite(g: _Graph, pow_node):
    from onnx import helper

    match = _match_rms_norm(g, pow_node)
    if match is None:
        return None
    nodes, x, weight, eps, out = match
    fused = helper.make_node(
        "SimplifiedLayerNormalization", [x, weight], [out], axis=-1, epsilon=eps, name=f"{out}.rms_norm"
    )
    return nodes, [fused]


def _fuse_skip_rms_norms(graph) -> int:
    """`Add(a, b) -> SimplifiedLayerNormalization` (a residual sum, then its norm) into one com.microsoft
    `SkipSimplifiedLayerNormalization`, whose fourth output is the sum for the other readers of the `Add`. onnxruntime's
    own fusion of this pair needs static shapes, which a graph with dynamic batch and sequence lengths lacks; the two
    summands have one shape here (batch, sequence, hidden), as that kernel requires."""
    return _rewrite_each(graph, "SimplifiedLayerNormalization", _skip_rms_norm_rewrite)


def _skip_rms_norm_rewrite(g: _Graph, norm):
    from onnx import helper

    add = g.producers.get(norm.input[0])
    if add is None or add.op_type != "Add" or any(name in g.initializers for name in add.input):
        return None  # a sum of two activations (the residual stream and a block's output), not a bias
    epsilon = _attributes(norm)["epsilon"]
    others = [u for u in g.consumers.get(add.output[0], []) if u is not norm]
    summed = add.output[0] if others or add.output[0] in g.outputs else ""
    fused = helper.make_node(
        "SkipSimplifiedLayerNormalization",
        [*add.input, norm.input[1]],
        [norm.output[0], "", "", summed],
        domain=MICROSOFT,
        epsilon=epsilon,
        name=f"{norm.output[0]}.skip",
    )
    return [add, norm], [fused]


def _match_rms_norm(g: _Graph, pow_node):
    """(nodes, x, weight, epsilon, output) of the RMSNorm starting at `pow_node`, or None."""
    x = pow_node.input[0]
    exponent = g.constant(pow_node.input[1])
    if exponent is None or exponent.size != 1 or float(exponent) != 2.0:
        return None
    mean = g.only_consumer(pow_node.output[0], "ReduceMean")
    if mean is None or len(mean.input) != 2 or _attributes(mean).get("keepdims", 1) != 1:
        return None
    axes = g.constant(mean.input[1])
    if axes is None or axes.tolist() != [-1]:
        return None
    add = g.only_consumer(mean.output[0], "Add")
    eps = g.constant(g.other_input(add, mean.output[0]) or "") if add is not None else None
    if eps is None or eps.size != 1:
        return None
    sqrt = g.only_consumer(add.output[0], "Sqrt")
    reciprocal = sqrt and g.only_consumer(sqrt.output[0], "Reciprocal")
    normed = reciprocal and g.only_consumer(reciprocal.output[0], "Mul")
    if normed is None or g.other_input(normed, reciprocal.output[0]) != x:
        return None
    scale = g.only_consumer(normed.output[0], "Mul")
    weight = scale and g.other_input(scale, normed.output[0])
    if weight is None or weight not in g.initializers or not _float_tensor(g.initializers[weight], 1):
        return None
    return [pow_node, mean, add, sqrt, reciprocal, normed, scale], x, weight, float(eps), scale.output[0]


def _fuse_causal_convs(graph) -> int:
    return _rewrite_each(graph, "Conv", _causal_conv_rewrite)


def _causal_conv_rewrite(g: _Graph, conv):
    from onnx import helper

    match = _match_causal_conv(g, conv)
    if match is None:
        return None
    concat, slices, past, x = match
    state = slices[0].output[0] if slices else f"{conv.output[0]}.state"
    fused = helper.make_node(
        "CausalConvWithState",
        [x, *conv.input[1:3], *([""] if len(conv.input) < 3 else []), past],
        [conv.output[0], state],
        domain=MICROSOFT,
        name=f"{conv.output[0]}.causal_conv",
    )
    extra = [helper.make_node("Identity", [state], [s.output[0]]) for s in slices[1:]]
    return [concat, conv, *slices], [fused, *extra]


def _match_causal_conv(g: _Graph, conv):
    """(concat, slices, past, x) of a depthwise causal conv over `Concat(past, x)` whose other readers are slices of
    the last `kernel - 1` inputs, or None. `past` must be a graph input of static length `kernel - 1`."""
    weight = g.initializers.get(conv.input[1])
    if weight is None or not _float_tensor(weight, 3) or weight.dims[1] != 1:
        return None
    channels, _, kernel = weight.dims
    attrs = _attributes(conv)
    if (
        attrs.get("group") != channels
        or attrs.get("kernel_shape", [kernel]) != [kernel]
        or any(attrs.get(k, [1]) != [1] for k in ("strides", "dilations"))
        or any(attrs.get("pads", [0, 0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
    ):  # fmt: skip
        return None
    concat = g.producers.get(conv.input[0])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    if _attributes(concat).get("axis") not in (-1, 2) or concat.output[0] in g.outputs:
        return None
    past, x = concat.input
    if _static_dims(g.graph, past) != [None, channels, kernel - 1]:
        return None
    slices = []
    for user in g.consumers.get(concat.output[0], []):
        if user is conv:
            continue
        if user.op_type != "Slice" or not _is_last_window(g, user, kernel - 1):
            return None
        slices.append(user)
    return concat, slices, past, x


def _is_last_window(g: _Graph, slice_node, width: int) -> bool:
    """A step-1 `Slice` along the last axis whose output is a graph output of static length `width`, the only slice
    of the window that has that length at every sequence length is its end (the next conv state)."""
    inputs = list(slice_node.input) + [""] * (5 - len(slice_node.input))
    axes = g.constant(inputs[3]) if inputs[3] else None
    steps = g.constant(inputs[4]) if inputs[4] else numpy.ones(1)
    if axes is None or axes.tolist() not in ([-1], [2]) or steps is None or steps.tolist() != [1]:
        return False
    dims = _static_dims(g.graph, slice_node.output[0])
    return dims is not None and len(dims) == 3 and dims[2] == width


def _static_dims(graph, name: str) -> list | None:
    """Static dims (None where symbolic) of a graph input or output, or None if `name` is neither."""
    for value in [*graph.input, *graph.output]:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None


def _merge_sibling_matmuls(graph) -> int:
    """`MatMul`s of one input by different weight matrices (an MLP's gate and up projections, attention's q, k and v)
    into one `MatMul` by the weights side by side, then a `Split`: one weight read per input, which the int8 graph's
    `MatMulNBits` (blocks along the input dim, per output column) quantizes exactly as it did the parts. Returns the
    number of merged groups."""
    from onnx import helper, numpy_helper

    g, count = _Graph(graph), 0
    groups: dict[str, list] = {}
    for node in graph.node:
        weight = g.initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and len(g.consumers[weight.name]) == 1:
            groups.setdefault(node.input[0], []).append(node)
    for x, matmuls in groups.items():
        weights = [numpy_helper.to_array(g.initializers[m.input[1]]) for m in matmuls]
        if len(matmuls) < 2 or len({w.shape[0] for w in weights}) != 1 or len({w.dtype for w in weights}) != 1:
            continue
        name = f"{matmuls[0].output[0]}.merged"
        graph.initializer.append(numpy_helper.from_array(numpy.concatenate(weights, axis=1), f"{name}.weight"))
        sizes = numpy_helper.from_array(
            numpy.asarray([w.shape[1] for w in weights], dtype=numpy.int64), f"{name}.sizes"
        )
        graph.initializer.append(sizes)
        nodes = [
            helper.make_node("MatMul", [x, f"{name}.weight"], [name], name=name),
            helper.make_node(
                "Split", [name, sizes.name], [m.output[0] for m in matmuls], axis=-1, name=f"{name}.split"
            ),
        ]
        _replace(graph, matmuls, nodes)
        for m in matmuls:
            graph.initializer.remove(g.initializers[m.input[1]])
        count += 1
    return count


def _remove_dead_nodes(graph) -> int:
    """Drops top-level nodes none of whose outputs reach a graph output; returns how many."""
    needed, kept = {o.name for o in graph.output}, []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(_outer_names(node))
    removed = len(graph.node) - len(kept)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(kept))
    return removed


def _outer_names(node) -> set[str]:
    """Names a node's subgraphs (a Scan's body) read from the enclosing graph (or may: every input name they use)."""
    from onnx import AttributeProto

    names = set()
    for attribute in node.attribute:
        subgraphs = [attribute.g] if attribute.type == AttributeProto.GRAPH else list(attribute.graphs)
        for subgraph in subgraphs:
            for inner in subgraph.node:
                names.update(inner.input)
                names.update(_outer_names(inner))
    return names


def _replace(graph, old: list, new: list) -> None:
    """Swaps the nodes `old` for `new`, the latter at the position of the first of `old` (producers come first)."""
    position = min(list(graph.node).index(n) for n in old)
    for node in old:
        graph.node.remove(node)
    for offset, node in enumerate(new):
        graph.node.insert(position + offset, node)


__all__ = ["fuse_onnx_graph"]
