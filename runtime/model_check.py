"""Checking a ``.tflite`` model's flatbuffer and graph before any interpreter reads it.

TFLite interpreters trust the model: ``tflite_runtime`` 2.14 parses the flatbuffer without
verifying it (a corrupted vtable of an operator's options segfaults it), and both interpreters
trust the graph (an operator that writes a tensor another operator writes too, that reads a
tensor nothing has written, or a tensor whose declared size is absurd, makes the built-in kernels
or the XNNPACK delegate write through a null pointer or allocate gigabytes; all found by
``tests/test_runtime_corrupt_models.py``). :func:`check_model` refuses such models with
:class:`ModelCheckError` before the bytes reach an interpreter:

- the flatbuffer, as FlatBuffers' own verifier would check it: the ``TFL3`` identifier, then every
  table, vtable, scalar field, string and vector reachable from the root through the schema
  (``runtime/tflite_schema.py``, every operator's options included) lies inside the bytes, and
  strings end with their terminator; schema version 3;
- per subgraph: every tensor index (subgraph inputs and outputs, operator inputs and outputs,
  signatures) in range; every operator code index in range; every buffer index in range and
  every constant's data inside the file, exactly as large as its shape and type say;
- the data flow, in execution order: an operator reads only subgraph inputs, constants, variables
  and tensors an earlier operator wrote; it writes only tensors that are none of these and that
  no other operator writes; every subgraph output is written or is an input or constant;
- omitted inputs (index ``-1``) only where :data:`OPTIONAL_INPUTS` allows them: kernels read
  most inputs without checking for one that is missing;
- sizes: no tensor that the interpreter allocates is declared larger than
  :data:`MAX_ACTIVATION_BYTES`;
- values: every float constant (weights, embedding tables) is finite. A trained weight that is
  NaN or infinite is a corruption; outside the few rows a probe event reads (an embedding row of
  one item) it would otherwise only show when a user meets that item.

Pure Python over the flatbuffer, numpy over the float constants: a few milliseconds for a model
of a few hundred operators.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from pocketrec.runtime.tflite_schema import ROOT, TABLES, UNIONS

MAX_ACTIVATION_BYTES = 64 << 20
"""Largest non-constant tensor a model may declare: a step model handles one event, so its
activations are a few kilobytes; 64 MiB is far above any such model and far below the gigabytes a
corrupted shape can ask for."""

SCHEMA_VERSION = 3

OPTIONAL_INPUTS: dict[int, frozenset[int]] = {
    3: frozenset({2}),  # CONV_2D: bias
    4: frozenset({2}),  # DEPTHWISE_CONV_2D: bias
    9: frozenset({2}),  # FULLY_CONNECTED: bias
    67: frozenset({3}),  # TRANSPOSE_CONV: bias
    132: frozenset({2}),  # CONV_3D: bias
    141: frozenset({3}),  # CONV_3D_TRANSPOSE: bias
}
"""Builtin operator code -> the input positions a model may omit (``-1``). The step models the
converter writes omit only fully connected biases; extend this when a model needs another."""

# Field indices in the schema's tables.
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_SIGNATURES = 0, 1, 2, 4, 7
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_IS_VARIABLE, _TENSOR_SPARSITY = 0, 1, 2, 5, 6
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS = 0, 1, 2
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_BUILTIN = 0, 3
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS, _SIGNATURE_SUBGRAPH = 0, 1, 4
_TENSOR_MAP_INDEX = 1

# Bits per element of each TensorType (schema order); 0: no fixed size (string, resource, variant).
_TYPE_BITS = (32, 16, 32, 8, 64, 0, 8, 16, 64, 8, 64, 128, 64, 0, 0, 32, 16, 4, 16, 2, 4, 8, 8)
_FLOAT_TYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f2"),
    10: np.dtype("<f8"),
}


class ModelCheckError(ValueError):
    """The model's flatbuffer or graph is malformed (the message says where)."""


_STRUCTS = {fmt: struct.Struct(fmt) for fmt in ("<b", "<B", "<H", "<i", "<I", "<Q")}


class _Reader:
    """Bounds-checked reads of a little-endian flatbuffer. A table's vtable is checked and
    parsed once (:meth:`table_slots`) and remembered."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._tables: dict[int, tuple[int, dict[int, int]]] = {}

    def _unpack(self, fmt: str, pos: int) -> int:
        unpacker = _STRUCTS[fmt]
        if pos < 0 or pos + unpacker.size > self.size:
            raise ModelCheckError(f"offset {pos} is outside the {self.size}-byte model")
        value: int = unpacker.unpack_from(self.data, pos)[0]
        return value

    def table_slots(self, table: int) -> tuple[int, dict[int, int]]:
        """The table at ``table``, its vtable and inline part checked to lie inside the model:
        its inline size and ``{slot: offset}`` of the fields it holds."""
        known = self._tables.get(table)
        if known is not None:
            return known
        vtable = table - self._unpack("<i", table)
        size, inline = self._unpack("<H", vtable), self._unpack("<H", vtable + 2)
        if size < 4 or size % 2 or vtable + size > self.size:
            raise ModelCheckError(f"bad vtable at offset {vtable}")
        if inline < 4 or table + inline > self.size:
            raise ModelCheckError(f"the table at offset {table} runs past the end of the model")
        offsets = struct.unpack_from(f"<{(size - 4) // 2}H", self.data, vtable + 4)
        slots = {slot: offset for slot, offset in enumerate(offsets) if offset}
        for slot, offset in slots.items():
            if offset < 4 or offset >= inline:
                raise ModelCheckError(f"field {slot} of the table at {table} is outside it")
        self._tables[table] = inline, slots
        return inline, slots

    def field(self, table: int, index: int) -> int | None:
        """Position of field ``index`` of the table at ``table``; ``None`` when absent."""
        offset = self.table_slots(table)[1].get(index)
        return None if offset is None else table + offset

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, index)
        return default if pos is None else self._unpack(fmt, pos)

    def target(self, pos: int) -> int:
        """Where the offset stored at ``pos`` points."""
        return pos + self._unpack("<I", pos)

    def vector_at(self, start: int, item_size: int) -> tuple[int, int]:
        """``(first element position, length)`` of the vector at ``start``, checked to lie
        inside the model."""
        length = self._unpack("<I", start)
        if start + 4 + length * item_size > self.size:
            raise ModelCheckError(f"vector at offset {start} runs past the end of the model")
        return start + 4, length

    def vector(self, table: int, index: int, item_size: int = 4) -> tuple[int, int]:
        """``(first element position, length)`` of a vector field (``(0, 0)`` when absent)."""
        pos = self.field(table, index)
        return (0, 0) if pos is None else self.vector_at(self.target(pos), item_size)

    def ints(self, table: int, index: int) -> list[int]:
        first, length = self.vector(table, index)
        return list(struct.unpack_from(f"<{length}i", self.data, first)) if length else []

    def tables(self, table: int, index: int) -> list[int]:
        first, length = self.vector(table, index)
        return [self.target(first + 4 * i) for i in range(length)]

    def string_at(self, start: int) -> None:
        """Check the string at ``start``: inside the model, with its terminating zero."""
        first, length = self.vector_at(start, 1)
        if first + length >= self.size or self.data[first + length] != 0:
            raise ModelCheckError(f"the string at offset {start} is not terminated")


def _verify_flatbuffer(reader: _Reader) -> None:
    """Walk every table reachable from the root through the schema (module docstring). Each
    visit is budgeted (tables may be shared, the walk must stay linear in the model's size)."""
    budget = len(reader.data) // 4 + 64
    pending = [(reader.target(0), ROOT)]
    while pending:
        table, name = pending.pop()
        budget -= 1
        if budget < 0:
            raise ModelCheckError("more table references than the model has room for")
        inline, slots = reader.table_slots(table)
        fields = TABLES[name]
        for slot, offset in slots.items():
            kind = fields.get(slot, 1)  # a field newer than the schema: at least one byte
            size = kind if isinstance(kind, int) else 4
            if offset + size > inline:
                raise ModelCheckError(f"field {slot} of {name} at {table} runs past the table")
            if isinstance(kind, int):
                continue
            target = reader.target(table + offset)
            what, _, rest = kind.partition(":")
            if what == "string":
                reader.string_at(target)
            elif what == "vector":
                reader.vector_at(target, int(rest))
            elif what in ("strings", "tables"):
                first, length = reader.vector_at(target, 4)
                budget -= length
                for i in range(length):
                    element = reader.target(first + 4 * i)
                    if what == "strings":
                        reader.string_at(element)
                    else:
                        pending.append((element, rest))
            elif what == "table":
                pending.append((target, rest))
            else:  # a union: the table its type names (an unknown type is never read)
                union, type_slot = rest.split(":")
                member = UNIONS[union].get(reader.scalar(table, int(type_slot), "<B"))
                if member is not None:
                    pending.append((target, member))


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]
    type: int
    buffer: int
    variable: bool
    sparse: bool  # its buffer holds the compressed (sparse) form


def check_model(data: bytes) -> list[tuple[int, ...]]:
    """Check the ``.tflite`` bytes ``data`` as the module docstring says; returns the declared
    shape of every tensor of the first (primary) subgraph, or raises :class:`ModelCheckError`
    naming the first problem."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelCheckError("not a TFLite flatbuffer (no TFL3 identifier)")
    reader = _Reader(data)
    _verify_flatbuffer(reader)
    root = reader.target(0)
    version = reader.scalar(root, _MODEL_VERSION, "<I")
    if version != SCHEMA_VERSION:
        raise ModelCheckError(f"schema version {version}, expected {SCHEMA_VERSION}")
    opcodes = [
        max(
            reader.scalar(code, _OPCODE_DEPRECATED_BUILTIN, "<b"),
            reader.scalar(code, _OPCODE_BUILTIN, "<i"),
        )
        for code in reader.tables(root, _MODEL_OPCODES)
    ]
    buffers = [_buffer_bytes(reader, buffer) for buffer in reader.tables(root, _MODEL_BUFFERS)]
    graphs = reader.tables(root, _MODEL_SUBGRAPHS)
    if not graphs:
        raise ModelCheckError("no subgraph")
    shapes = [_check_graph(reader, graph, n, opcodes, buffers) for n, graph in enumerate(graphs)]
    tensor_counts = [len(graph_shapes) for graph_shapes in shapes]
    for signature in reader.tables(root, _MODEL_SIGNATURES):
        graph = reader.scalar(signature, _SIGNATURE_SUBGRAPH, "<I")
        if graph >= len(graphs):
            raise ModelCheckError(f"a signature names subgraph {graph} of {len(graphs)}")
        for side in (_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS):
            for tensor_map in reader.tables(signature, side):
                index = reader.scalar(tensor_map, _TENSOR_MAP_INDEX, "<I")
                if index >= tensor_counts[graph]:
                    raise ModelCheckError(
                        f"a signature names tensor {index} of subgraph {graph}, which has "
                        f"{tensor_counts[graph]}"
                    )
    return shapes[0]


def _buffer_bytes(reader: _Reader, buffer: int) -> tuple[int, int]:
    """``(position, length)`` of a buffer's constant data, checked to lie inside the model."""
    first, length = reader.vector(buffer, _BUFFER_DATA, item_size=1)
    offset = reader.scalar(buffer, _BUFFER_OFFSET, "<Q")
    size = reader.scalar(buffer, _BUFFER_SIZE, "<Q")
    if offset > 1:  # data stored after the flatbuffer (models over 2 GB)
        if offset + size > len(reader.data):
            raise ModelCheckError(f"a buffer's data at offset {offset} runs past the end")
        return offset, size
    return first, length


def _check_graph(
    reader: _Reader, graph: int, number: int, opcodes: list[int], buffers: list[tuple[int, int]]
) -> list[tuple[int, ...]]:
    """Check one subgraph; returns the declared shapes of its tensors."""
    where = f"subgraph {number}"
    tensors = [_read_tensor(reader, table) for table in reader.tables(graph, _GRAPH_TENSORS)]
    count = len(tensors)
    written: set[int] = set()  # tensors that hold data at this point of the execution order
    for i, tensor in enumerate(tensors):
        _check_tensor(reader.data, tensor, f"{where}, tensor {i}", buffers)
        if tensor.variable or buffers[tensor.buffer][1] > 0:
            written.add(i)
    inputs = reader.ints(graph, _GRAPH_INPUTS)
    _check_indices(inputs, count, f"{where} inputs")
    written.update(inputs)
    fixed = set(written)  # inputs, constants and variables: no operator may write them
    for op_number, op in enumerate(reader.tables(graph, _GRAPH_OPERATORS)):
        at = f"{where}, operator {op_number}"
        opcode = reader.scalar(op, _OP_OPCODE, "<I")
        if opcode >= len(opcodes):
            raise ModelCheckError(f"{at}: operator code {opcode} of {len(opcodes)}")
        op_inputs = reader.ints(op, _OP_INPUTS)
        allowed = OPTIONAL_INPUTS.get(opcodes[opcode], frozenset())
        omitted = [n for n, t in enumerate(op_inputs) if t == -1 and n not in allowed]
        if omitted:
            raise ModelCheckError(
                f"{at} (builtin {opcodes[opcode]}) omits input {omitted[0]}, which it needs"
            )
        op_inputs = [t for t in op_inputs if t != -1]
        _check_indices(op_inputs, count, f"{at} inputs")
        unwritten = [t for t in op_inputs if t not in written]
        if unwritten:
            raise ModelCheckError(f"{at} reads tensor {unwritten[0]} before anything writes it")
        op_outputs = reader.ints(op, _OP_OUTPUTS)
        _check_indices(op_outputs, count, f"{at} outputs")
        for t in op_outputs:
            if t in fixed:
                raise ModelCheckError(f"{at} writes tensor {t}, an input, constant or variable")
            if t in written:
                raise ModelCheckError(f"{at} writes tensor {t}, which another operator writes")
            written.add(t)
    outputs = reader.ints(graph, _GRAPH_OUTPUTS)
    _check_indices(outputs, count, f"{where} outputs")
    unwritten = [t for t in outputs if t not in written]
    if unwritten:
        raise ModelCheckError(f"{where}: output tensor {unwritten[0]} is never written")
    return [tensor.shape for tensor in tensors]


def _read_tensor(reader: _Reader, table: int) -> _Tensor:
    return _Tensor(
        shape=tuple(reader.ints(table, _TENSOR_SHAPE)),
        type=reader.scalar(table, _TENSOR_TYPE, "<b"),
        buffer=reader.scalar(table, _TENSOR_BUFFER, "<I"),
        variable=bool(reader.scalar(table, _TENSOR_IS_VARIABLE, "<B")),
        sparse=reader.field(table, _TENSOR_SPARSITY) is not None,
    )


def _check_tensor(data: bytes, tensor: _Tensor, where: str, buffers: list[tuple[int, int]]) -> None:
    if not 0 <= tensor.type < len(_TYPE_BITS):
        raise ModelCheckError(f"{where}: unknown type {tensor.type}")
    if tensor.buffer >= len(buffers):
        raise ModelCheckError(f"{where}: buffer {tensor.buffer} of {len(buffers)}")
    if any(n < 0 for n in tensor.shape):
        raise ModelCheckError(f"{where}: negative dimension in shape {list(tensor.shape)}")
    bits = _TYPE_BITS[tensor.type]
    if not bits or tensor.sparse:
        return
    size = (math.prod(tensor.shape) * bits + 7) // 8
    position, stored = buffers[tensor.buffer]
    if stored and size != stored:
        raise ModelCheckError(
            f"{where}: shape {list(tensor.shape)} needs {size} bytes, its buffer holds {stored}"
        )
    dtype = _FLOAT_TYPES.get(tensor.type)
    if stored and dtype is not None:
        values = np.frombuffer(data, dtype=dtype, count=stored // dtype.itemsize, offset=position)
        if not np.isfinite(values).all():
            raise ModelCheckError(f"{where}: a float constant is NaN or infinite")
    if not stored and size > MAX_ACTIVATION_BYTES:
        raise ModelCheckError(
            f"{where}: shape {list(tensor.shape)} declares {size} bytes (limit "
            f"{MAX_ACTIVATION_BYTES})"
        )


def _check_indices(indices: list[int], count: int, where: str) -> None:
    bad = [t for t in indices if not 0 <= t < count]
    if bad:
        raise ModelCheckError(f"{where}: tensor index {bad[0]} of {count}")
