"""int8 quantization for CPU inference: the PyTorch model (torchao) and exported ONNX graphs (onnxruntime).

Both keep activations in float between layers and quantize them per call ("dynamic"): weights are stored as int8
with one float scale per output channel, and each matmul quantizes its input on the fly, so no calibration data is
needed. Covered: every `nn.Linear` (GRU `input_proj` / `hidden_proj` / `out_proj`, attention `q/k/v/o_proj`, MLP
`gate/up/down_proj`) and the token embedding (int8 weight-only, shared with a tied LM head). Kept in float: norms,
the short depthwise conv, biases and the recurrent state itself.

`torchao` and `onnxruntime` come with the `export` extra (`pip install "hf_gru[export]"`); nothing here is needed to
load a checkpoint.
"""

import io
import tempfile
import warnings
from pathlib import Path

import numpy
import torch
from torch import nn
from transformers import PreTrainedModel


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(f"{module} is needed for int8 quantization: pip install 'hf_gru[export]'") from error


INT8_ENGINES = ("torchao", "torch.ao")


def quantize_int8(model: PreTrainedModel, embeddings: bool = True, engine: str = "torchao") -> PreTrainedModel:
    """Quantizes `model` in place for CPU inference with torchao (or `engine="torch.ao"`, below); returns it.

    Every `nn.Linear` gets int8 weights (per output channel) and int8 dynamic activations (per token). With
    `embeddings`, the input embedding is stored as int8 (per row, weight-only) and a tied LM head keeps reading that
    same tensor, so the vocabulary matrix is stored once; without, a tied LM head gets its own int8 copy and the
    embedding stays float. GRU projections are quantized too: a quantized `hidden_proj` makes the classic-GRU mixer
    take its reference loop (the fused scan reads plain weights only), minGRU mixers keep their fused scan.

    `engine="torch.ao"`: `torch.ao`'s dynamic int8 Linear (fbgemm/x86 kernels, int8 weights per output channel) for
    every Linear, the LM head included (a tied head gets its own int8 copy and the model is untied); the input
    embedding stays float (`embeddings` is ignored: torch.ao's int8 embedding refused the non-contiguous ids of
    `generate`; a lookup reads one row per token anyway). Faster on an x86 CPU without VNNI (the ~20M config decoded at ~1.7x the
    float model, torchao at ~0.2x: `benchmarks/edge.py`), but activations are quantized per tensor, not per token, so
    logits depend a little on which tokens share a call (cached decode vs one full forward: ~9e-3 on a tiny model,
    ~5e-4 with torchao). `torch.ao` quantization is deprecated in favour of torchao.
    """
    if engine not in INT8_ENGINES:
        raise ValueError(f"engine={engine!r} is not supported; expected one of {INT8_ENGINES}.")
    if engine == "torch.ao":
        return _quantize_torch_ao(model)
    quantization = _require("torchao.quantization")
    input_embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is input_embeddings.weight
    skip = {id(head)} if tied and embeddings else set()
    with torch.no_grad():
        if embeddings:
            weight_only = quantization.IntxWeightOnlyConfig(
                weight_dtype=torch.int8, granularity=quantization.PerAxis(0)
            )
            quantization.quantize_(
                input_embeddings, weight_only, filter_fn=lambda module, _: isinstance(module, nn.Embedding)
            )
        quantization.quantize_(
            model,
            quantization.Int8DynamicActivationInt8WeightConfig(),
            filter_fn=lambda module, _: isinstance(module, nn.Linear) and id(module) not in skip,
        )
        if tied and embeddings:
            head.weight = input_embeddings.weight  # the int8 embedding, read as an int8 weight-only linear
    # `tie_weights()` (e.g. in `resize_token_embeddings`) must not replace the quantized head with a float tensor
    model.config.tie_word_embeddings = tied and embeddings
    return model


def _quantize_torch_ao(model: PreTrainedModel) -> PreTrainedModel:
    ao = torch.ao.quantization
    specs = {nn.Linear: ao.per_channel_dynamic_qconfig}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")  # its deprecation notice
        ao.quantize_dynamic(model, qconfig_spec=specs, dtype=torch.qint8, inplace=True)
    model.config.tie_word_embeddings = False  # the head holds its own int8 copy; tie_weights() must not undo it
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the stored size of a float or torchao-quantized model (a tensor
    shared by two names, such as tied embeddings, is written once)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def quantize_onnx_int8(onnx_path: str | Path, output_path: str | Path | None = None) -> Path:
    """Writes an int8 copy of an ONNX graph with onnxruntime's quantization tools; returns its path.

    Weight matrices of `MatMul` become `MatMulNBits` with 8-bit weights in blocks of 64 along the input (one float
    scale per block, symmetric) and int8 activations quantized at run time (`accuracy_level=4`), onnxruntime's fused
    weight-only kernel; what that pass leaves (`Gather`, the embedding lookup, and matmuls it does not take) gets
    dynamic int8 (7-bit range), inside loop bodies too. The tied LM head, which reads the embedding table transposed,
    becomes an integer matmul on the embedding's own int8 table (stored once), where quantize_dynamic alone dequantized
    the whole table at every call and ran a float matmul. The default output is `<stem>.int8.onnx` beside the input,
    which is left unchanged.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise ValueError(f"onnx_path must be an existing .onnx file, got {str(onnx_path)!r}.")
    output_path = Path(output_path) if output_path is not None else onnx_path.with_suffix(".int8.onnx")
    if output_path.resolve() == onnx_path.resolve():
        raise ValueError(f"output_path must differ from onnx_path ({str(onnx_path)!r}): the input is kept.")
    onnx = _require("onnx")
    ort_quantization = _require("onnxruntime.quantization")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(onnx_path))
    transposed = _store_transposed_weights(model)
    # Profiled on the ~20M config (context 1024, one thread, issue 21): with the tied head left as DequantizeLinear of
    # the whole table + Transpose + float MatMul, int8 decoded at ~1.15x float; with the head fixed, per-channel
    # MatMulInteger (DynamicQuantizeMatMul) everywhere ran at ~1.8x, these MatMulNBits kernels at ~1.9-2.0x.
    nbits = MatMulNBitsQuantizer(
        model, bits=8, block_size=64, is_symmetric=True, accuracy_level=4, op_types_to_quantize=("MatMul",)
    )
    nbits.process()
    model = nbits.model.model
    for name, table in transposed.items():
        _gather_from_nbits(model, table, f"{name}_Q8", f"{name}_scales")
    # the block scales the lookups gather stay float (quantize_dynamic would quantize that Gather's table too)
    float_gathers = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name.endswith(".scales")]
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / "nbits.onnx"
        onnx.save(model, str(staged))
        ort_quantization.quantize_dynamic(
            staged,
            output_path,
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
            per_channel=True,
            weight_type=ort_quantization.QuantType.QInt8,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2 only) onnxruntime's uint8 x int8 kernel sums pairs of
            # products in int16 and saturates; at 8 bits a 2-layer MLP here was off by 16% of its output range, at 7
            # bits by 1.6%.
            reduce_range=True,
            # Activation x activation products (attention scores) stay float; subgraphs are quantized too.
            extra_options={"MatMulConstBOnly": True, "EnableSubgraph": True},
            nodes_to_exclude=float_gathers,
        )
    quantized = onnx.load(str(output_path))
    _int8_tied_head(quantized)
    onnx.save(quantized, str(output_path))
    return output_path


def _store_transposed_weights(model) -> dict[str, str]:
    """Replaces each top-level `Transpose` of a 2-D initializer by the transposed initializer (in place), so that
    MatMulNBits takes the matmul reading it (the tied LM head). Returns {new initializer: source initializer}."""
    import numpy
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    kept, transposed = [], {}
    for node in graph.node:
        if (
            node.op_type == "Transpose"
            and node.input[0] in initializers
            and len(initializers[node.input[0]].dims) == 2
        ):
            array = numpy_helper.to_array(initializers[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(numpy.ascontiguousarray(array.T), node.output[0]))
            transposed[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return transposed


def _gather_from_nbits(model, table: str, blob: str, scales: str) -> None:
    """Points the embedding lookups (`Gather` of `table`) at the 8-bit MatMulNBits blocks of the tied head, which
    hold the same matrix: rows (vocab, blocks, block size) as uint8 with zero point 128 and one scale per block. The lookup
    dequantizes the gathered rows only, and the float table is dropped, so the vocabulary matrix is stored once.
    Leaves the graph unchanged where the layout is not that one (another onnxruntime version)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in graph.input}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] == table]
    if blob not in initializers or scales not in initializers or table not in initializers or not gathers:
        return
    rows, blocks, width = initializers[blob].dims
    if initializers[table].dims[1] != blocks * width or any(n.input[1] not in ranks for n in gathers):
        return  # padded blocks, or ids of unknown rank
    if any(table in n.input for n in graph.node if n not in gathers):
        return  # the float table has other readers
    zero = numpy_helper.from_array(numpy.asarray(128.0, dtype=numpy.float32), f"{blob}.zero_point")
    graph.initializer.append(zero)
    for k, gather in enumerate(gathers):
        ids, out, tag = gather.input[1], gather.output[0], f"{blob}.gather{k}"
        shape = numpy_helper.from_array(numpy.asarray([0] * ranks[ids] + [-1], dtype=numpy.int64), f"{tag}.shape")
        graph.initializer.append(shape)
        nodes = [
            helper.make_node("Gather", [blob, ids], [f"{tag}.q"], axis=0),  # (..., blocks, block size)
            helper.make_node("Gather", [scales, ids], [f"{tag}.s"], axis=0, name=f"{tag}.scales"),  # (..., blocks)
            helper.make_node("Cast", [f"{tag}.q"], [f"{tag}.f"], to=TensorProto.FLOAT),
            helper.make_node("Sub", [f"{tag}.f", zero.name], [f"{tag}.c"]),
            helper.make_node("Unsqueeze", [f"{tag}.s", f"{tag}.axis"], [f"{tag}.s1"]),
            helper.make_node("Mul", [f"{tag}.c", f"{tag}.s1"], [f"{tag}.d"]),
            helper.make_node("Reshape", [f"{tag}.d", shape.name], [out]),
        ]
        graph.initializer.append(numpy_helper.from_array(numpy.asarray([-1], dtype=numpy.int64), f"{tag}.axis"))
        graph.node.remove(gather)
        graph.node.extend(nodes)
    graph.initializer.remove(initializers[table])
    _sort_topologically(graph)


def _int8_tied_head(model) -> None:
    """Rewrites, in place, a matmul that reads a dequantized int8 table through a `Transpose` (the tied LM head: the
    quantized embedding, dequantized in full at every call, transposed, then a float matmul) into an integer matmul on
    that same int8 table: the table is stored once and read as int8."""
    from onnx import TensorProto, helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for transpose in [n for n in graph.node if n.op_type == "Transpose"]:
        dequantize = producers.get(transpose.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or dequantize.input[0] not in initializers:
            continue
        table, scale, zero_point = dequantize.input[:3]
        users = consumers.get(transpose.output[0], [])
        if len(initializers[table].dims) != 2 or any(initializers[n].dims for n in (scale, zero_point)):
            continue  # a per-tensor 2-D table only: what quantize_dynamic writes for `Gather`
        if not users or any(u.op_type != "MatMul" or list(u.input).index(transpose.output[0]) != 1 for u in users):
            continue
        table_t = f"{table}.transposed"
        nodes = [helper.make_node("Transpose", [table], [table_t], perm=[1, 0])]
        for k, matmul in enumerate(users):
            x, out, tag = matmul.input[0], matmul.output[0], f"{table}.head{k}"
            nodes += [
                helper.make_node("DynamicQuantizeLinear", [x], [f"{tag}.x", f"{tag}.x_scale", f"{tag}.x_zero"]),
                helper.make_node("MatMulInteger", [f"{tag}.x", table_t, f"{tag}.x_zero", zero_point], [f"{tag}.int"]),
                helper.make_node("Cast", [f"{tag}.int"], [f"{tag}.float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{tag}.x_scale", scale], [f"{tag}.scale"]),
                helper.make_node("Mul", [f"{tag}.float", f"{tag}.scale"], [out]),
            ]
            graph.node.remove(matmul)
        graph.node.remove(transpose)
        if len(consumers.get(dequantize.output[0], [])) == 1:
            graph.node.remove(dequantize)
        graph.node.extend(nodes)
    _sort_topologically(graph)


def _sort_topologically(graph) -> None:
    """Orders `graph.node` so that each node follows the producers of its inputs (ONNX requires it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise RuntimeError("quantize_onnx_int8: the rewritten graph has a cycle or a missing input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


__all__ = ["INT8_ENGINES", "quantize_int8", "quantize_onnx_int8", "state_dict_bytes"]
