"""Broken bundles whose manifest still matches every file: what a compromised or buggy publisher
could sign and ship. Every file's length and SHA-256 match the manifest (it is re-hashed), so
only the checks beyond them (``.npy`` data lengths in ``verify_bundle``, then ``open_bundle``'s
proof) can refuse it.

Two ways to make one, both copying a good bundle directory ``source`` into a new ``target``:

- :func:`make_broken` ``(source, target, case)`` for a named case of :data:`CASES` (a truncated
  step model, a manifest ``state_dim`` off by one, ``items.json`` one entry short, ...).
  ``CASES[case]`` is the file whose name the ``BundleError`` must carry.
- :func:`make_corrupted` ``(source, target, seed)`` for a randomly corrupted ``step.tflite``
  (:func:`corrupt_model`: bit flips, byte overwrites, truncations, splices of regions, and edits
  of the flatbuffer's tensor shapes, indices, vector lengths and weights; the strategy and every
  choice come from ``seed``).

Needs numpy and pocketrec only (no TensorFlow, no flatbuffers package): the flatbuffer is walked by
the small reader below, which knows the few TFLite schema fields it edits.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pocketrec.core import bundle as fmt

# --------------------------------------------------------------------------- re-hashing


def rehash(bundle_dir: Path) -> None:
    """Rewrite the manifest's ``files`` entries (length, SHA-256) from the files as they are."""
    path = bundle_dir / fmt.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"] = {
        name: _entry(bundle_dir / name)
        for name in manifest["files"]
        if (bundle_dir / name).exists()
    }
    _write_manifest(bundle_dir, manifest)


def _entry(path: Path) -> dict[str, Any]:
    entry = fmt.file_entry(path)
    return {"bytes": entry.bytes, "sha256": entry.sha256}


def _write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True)
    (bundle_dir / fmt.MANIFEST).write_text(text, encoding="utf-8")


def _edit_manifest(bundle_dir: Path, **fields: Any) -> None:
    path = bundle_dir / fmt.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(fields)
    _write_manifest(bundle_dir, manifest)


def _manifest(bundle_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((bundle_dir / fmt.MANIFEST).read_text(encoding="utf-8"))
    return loaded


# --------------------------------------------------------------------------- named cases


def _truncated_step(root: Path) -> None:
    model = (root / fmt.STEP_MODEL).read_bytes()
    (root / fmt.STEP_MODEL).write_bytes(model[: len(model) // 2])


def _state_dim_off_by_one(root: Path) -> None:
    _edit_manifest(root, state_dim=_manifest(root)["state_dim"] + 1)


def _json_list(root: Path, name: str, change: Callable[[list[Any]], list[Any]]) -> None:
    values = json.loads((root / name).read_text(encoding="utf-8"))
    (root / name).write_text(json.dumps(change(values)), encoding="utf-8")


def _items_one_short(root: Path) -> None:
    _json_list(root, fmt.ITEMS, lambda ids: ids[:-1])


def _duplicate_item_id(root: Path) -> None:
    _json_list(root, fmt.ITEMS, lambda ids: [*ids[:-1], ids[0]])


def _item_id_with_newline(root: Path) -> None:
    _json_list(root, fmt.ITEMS, lambda ids: [f"{ids[0]}\n", *ids[1:]])


def _items_nested_deep(root: Path) -> None:
    (root / fmt.ITEMS).write_text("[" * 100_000, encoding="utf-8")


def _catalog_data_cut(root: Path) -> None:
    """The catalog's header intact, its last row of data cut off."""
    path = _catalog_path(root)  # the float32 catalog, or the int8 catalog's scales
    row_bytes = 4 * (np.load(path).shape[1] if path.name == fmt.CATALOG else 1)
    path.write_bytes(path.read_bytes()[:-row_bytes])


def _titles_one_short(root: Path) -> None:
    _json_list(root, fmt.ITEM_TITLES, lambda titles: titles[:-1])


def _catalog_path(root: Path) -> Path:
    if _manifest(root)["catalog_dtype"] == "int8":
        return root / fmt.CATALOG_INT8_SCALES
    return root / fmt.CATALOG


def _nan_in_catalog(root: Path) -> None:
    path = _catalog_path(root)  # the float32 catalog, or the int8 catalog's float32 scales
    values = np.load(path)
    values.reshape(-1)[values.size // 2] = np.nan
    np.save(path, values)


def _inf_in_initial_user(root: Path) -> None:
    values = np.load(root / fmt.INITIAL_USER)
    values[0] = np.inf
    np.save(root / fmt.INITIAL_USER, values)


def _catalog_wider_than_model(root: Path) -> None:
    """The catalog, initial user and manifest agree on D + 2 columns; the model outputs D + 1."""
    manifest = _manifest(root)
    names = [fmt.CATALOG_INT8_CODES] if manifest["catalog_dtype"] == "int8" else [fmt.CATALOG]
    for name in [*names, fmt.INITIAL_USER]:
        values = np.load(root / name)
        np.save(root / name, np.concatenate([values, np.zeros_like(values[..., :1])], axis=-1))
    _edit_manifest(root, user_dim=manifest["user_dim"] + 1)


def _more_items_than_the_model_embeds(root: Path) -> None:
    """Catalog, ids, titles and manifest grown to 4x the items; the model's item embedding table
    still covers the original ones only."""
    manifest = _manifest(root)
    n = manifest["num_items"] * 4
    if manifest["catalog_dtype"] == "int8":
        codes = np.load(root / fmt.CATALOG_INT8_CODES)
        scales = np.load(root / fmt.CATALOG_INT8_SCALES)
        np.save(root / fmt.CATALOG_INT8_CODES, np.resize(codes, (n, codes.shape[1])))
        np.save(root / fmt.CATALOG_INT8_SCALES, np.resize(scales, n))
    else:
        catalog = np.load(root / fmt.CATALOG)
        np.save(root / fmt.CATALOG, np.resize(catalog, (n, catalog.shape[1])))
    _json_list(root, fmt.ITEMS, lambda ids: [*ids, *(f"extra-{i}" for i in range(n - len(ids)))])
    if (root / fmt.ITEM_TITLES).exists():
        _json_list(root, fmt.ITEM_TITLES, lambda titles: [*titles, *([None] * (n - len(titles)))])
    _edit_manifest(root, num_items=n)


# --------------------------------------------------------------------------- the flatbuffer


class _FlatBuffer:
    """Read-only navigation of a little-endian FlatBuffer: tables, their fields and vectors.
    Positions are byte offsets into the buffer; nothing is validated (the model may be corrupt,
    but this reader only walks the pristine model)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        value: int = struct.unpack_from("<I", self.data, pos)[0]
        return value

    def root(self) -> int:
        return self.u32(0)

    def field(self, table: int, index: int) -> int | None:
        """Position of field ``index`` of ``table``, ``None`` when absent."""
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        size = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else None

    def vector(self, table: int, index: int) -> tuple[int, int, int] | None:
        """``(length position, first element position, length)`` of a vector field."""
        pos = self.field(table, index)
        if pos is None:
            return None
        start = pos + self.u32(pos)
        return start, start + 4, self.u32(start)

    def tables(self, table: int, index: int) -> list[int]:
        """The tables of a vector-of-tables field."""
        vec = self.vector(table, index)
        if vec is None:
            return []
        _, first, length = vec
        return [first + 4 * i + self.u32(first + 4 * i) for i in range(length)]


# TFLite schema field indices (tensorflow/lite/schema/schema.fbs).
_MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_SIGNATURES = 1, 2, 4, 7
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_SHAPE_SIGNATURE = 0, 1, 2, 7
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS = 0, 1, 2
_BUFFER_DATA = 0
_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS, _TENSOR_MAP_INDEX = 0, 1, 1
_FLOAT32, _INT32 = 0, 2  # TensorType values
_FLOAT_FORMATS = {0: "<f", 1: "<e"}  # TensorType FLOAT32, FLOAT16 -> struct format
_FLOAT_VALUES = {
    "<f": [math.nan, math.inf, -math.inf, 3e38, -3e38, 1e-45, 0.0],
    "<e": [math.nan, math.inf, -math.inf, 65504.0, -65504.0, 6e-8, 0.0],
}


@dataclass
class _Sites:
    """Where the model's structure lives: positions of int32 scalars by kind, of the tensor type
    bytes, and the float constant buffers: ``(start, bytes, struct format)``."""

    ints: dict[str, list[int]]
    type_bytes: list[int]
    float_buffers: list[tuple[int, int, str]]


def _sites(model: bytes) -> _Sites:
    fb = _FlatBuffer(model)
    root = fb.root()
    ints: dict[str, list[int]] = {
        k: [] for k in ("shape", "index", "length", "opcode", "signature", "graph_io")
    }
    type_bytes: list[int] = []
    buffer_data: list[tuple[int, int] | None] = []
    for buffer in fb.tables(root, _MODEL_BUFFERS):
        vec = fb.vector(buffer, _BUFFER_DATA)
        buffer_data.append(None if vec is None else (vec[1], vec[2]))
        if vec is not None:
            ints["length"].append(vec[0])
    float_buffers: list[tuple[int, int, str]] = []
    for graph in fb.tables(root, _MODEL_SUBGRAPHS):
        for field in (_GRAPH_INPUTS, _GRAPH_OUTPUTS):
            vec = fb.vector(graph, field)
            if vec is not None:
                ints["graph_io"] += [vec[1] + 4 * i for i in range(vec[2])]
        for field in (_GRAPH_TENSORS, _GRAPH_OPERATORS):
            vec = fb.vector(graph, field)
            if vec is not None:
                ints["length"].append(vec[0])
        for tensor in fb.tables(graph, _GRAPH_TENSORS):
            for field in (_TENSOR_SHAPE, _TENSOR_SHAPE_SIGNATURE):
                vec = fb.vector(tensor, field)
                if vec is not None:
                    ints["shape"] += [vec[1] + 4 * i for i in range(vec[2])]
                    ints["length"].append(vec[0])
            type_pos = fb.field(tensor, _TENSOR_TYPE)
            buffer_pos = fb.field(tensor, _TENSOR_BUFFER)
            if buffer_pos is not None:
                ints["index"].append(buffer_pos)
                data = buffer_data[fb.u32(buffer_pos)]
                float_format = _FLOAT_FORMATS.get(0 if type_pos is None else model[type_pos])
                if float_format is not None and data is not None and data[1] >= 4:
                    float_buffers.append((*data, float_format))
            if type_pos is not None:
                type_bytes.append(type_pos)
        for op in fb.tables(graph, _GRAPH_OPERATORS):
            opcode = fb.field(op, _OP_OPCODE)
            if opcode is not None:
                ints["opcode"].append(opcode)
            for field in (_OP_INPUTS, _OP_OUTPUTS):
                vec = fb.vector(op, field)
                if vec is not None:
                    ints["index"] += [vec[1] + 4 * i for i in range(vec[2])]
                    ints["length"].append(vec[0])
    for signature in fb.tables(root, _MODEL_SIGNATURES):
        for field in (_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS):
            for tensor_map in fb.tables(signature, field):
                pos = fb.field(tensor_map, _TENSOR_MAP_INDEX)
                if pos is not None:
                    ints["signature"].append(pos)
    vec = fb.vector(root, _MODEL_OPCODES)
    if vec is not None:
        ints["length"].append(vec[0])
    return _Sites(ints=ints, type_bytes=type_bytes, float_buffers=float_buffers)


# --------------------------------------------------------------------------- model edits


def _model_edit(edit: Callable[[bytearray, _FlatBuffer], None]) -> Callable[[Path], None]:
    """A case that edits ``step.tflite`` in place (same length) with ``edit(model, reader)``."""

    def apply(root: Path) -> None:
        path = root / fmt.STEP_MODEL
        model = bytearray(path.read_bytes())
        edit(model, _FlatBuffer(bytes(model)))
        path.write_bytes(bytes(model))

    return apply


def _graph(fb: _FlatBuffer) -> int:
    return fb.tables(fb.root(), _MODEL_SUBGRAPHS)[0]


def _op_vector(fb: _FlatBuffer, op_number: int, field: int) -> tuple[int, int, int]:
    vec = fb.vector(fb.tables(_graph(fb), _GRAPH_OPERATORS)[op_number], field)
    assert vec is not None
    return vec


def _put(model: bytearray, pos: int, value: int) -> None:
    struct.pack_into("<i", model, pos, value)


def _operator_without_outputs(model: bytearray, fb: _FlatBuffer) -> None:
    _put(model, _op_vector(fb, 0, _OP_OUTPUTS)[0], 0)  # the output vector's length


def _tensor_written_twice(model: bytearray, fb: _FlatBuffer) -> None:
    first = _op_vector(fb, 0, _OP_OUTPUTS)[1]
    _put(model, _op_vector(fb, 1, _OP_OUTPUTS)[1], fb.u32(first))


def _required_input_omitted(model: bytearray, fb: _FlatBuffer) -> None:
    _put(model, _op_vector(fb, 0, _OP_INPUTS)[1], -1)


def _activation(fb: _FlatBuffer) -> tuple[int, int]:
    """``(tensor table, shape vector's first element)`` of the first operator's first output."""
    tensor = fb.u32(_op_vector(fb, 0, _OP_OUTPUTS)[1])
    table = fb.tables(_graph(fb), _GRAPH_TENSORS)[tensor]
    shape = fb.vector(table, _TENSOR_SHAPE)
    assert shape is not None
    assert shape[2] > 0
    return table, shape[1] + 4 * (shape[2] - 1)


def _huge_declared_shape(model: bytearray, fb: _FlatBuffer) -> None:
    _put(model, _activation(fb)[1], 2**31 - 1)


def _declared_shape_off_by_one(model: bytearray, fb: _FlatBuffer) -> None:
    last_dim = _activation(fb)[1]
    _put(model, last_dim, fb.u32(last_dim) + 1)


def _wrong_tensor_type(model: bytearray, fb: _FlatBuffer) -> None:
    """The first int32 constant an operator reads becomes float32 (same size): the model is
    well formed, and the operator's kernel refuses the mix of types when it is prepared."""
    tensors = fb.tables(_graph(fb), _GRAPH_TENSORS)
    buffers = fb.tables(fb.root(), _MODEL_BUFFERS)
    for op in fb.tables(_graph(fb), _GRAPH_OPERATORS):
        vec = fb.vector(op, _OP_INPUTS)
        assert vec is not None
        for i in range(vec[2]):
            table = tensors[fb.u32(vec[1] + 4 * i)]
            type_pos, buffer_pos = fb.field(table, _TENSOR_TYPE), fb.field(table, _TENSOR_BUFFER)
            if type_pos is None or buffer_pos is None or model[type_pos] != _INT32:
                continue
            if fb.vector(buffers[fb.u32(buffer_pos)], _BUFFER_DATA) is not None:
                model[type_pos] = _FLOAT32
                return
    raise AssertionError("no operator reads an int32 constant")


def _nan_weight(model: bytearray, fb: _FlatBuffer) -> None:
    start, size, float_format = _sites(bytes(model)).float_buffers[0]
    struct.pack_into(float_format, model, start + size // 2 // 4 * 4, math.nan)


_CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "truncated_step": (fmt.STEP_MODEL, _truncated_step),
    "state_dim_off_by_one": (fmt.STEP_MODEL, _state_dim_off_by_one),
    "items_one_short": (fmt.ITEMS, _items_one_short),
    "duplicate_item_id": (fmt.ITEMS, _duplicate_item_id),
    "item_id_with_newline": (fmt.ITEMS, _item_id_with_newline),
    "items_nested_deep": (fmt.ITEMS, _items_nested_deep),
    "titles_one_short": (fmt.ITEM_TITLES, _titles_one_short),
    "catalog_data_cut": ("catalog", _catalog_data_cut),
    "nan_in_catalog": ("catalog", _nan_in_catalog),
    "inf_in_initial_user": (fmt.INITIAL_USER, _inf_in_initial_user),
    "catalog_wider_than_model": (fmt.STEP_MODEL, _catalog_wider_than_model),
    "more_items_than_the_model_embeds": (fmt.STEP_MODEL, _more_items_than_the_model_embeds),
    # step.tflite edited in place: malformed graphs that crashed or exhausted memory in the
    # interpreters before runtime/model_check.py, and what the interpreter itself refuses
    "operator_without_outputs": (fmt.STEP_MODEL, _model_edit(_operator_without_outputs)),
    "tensor_written_twice": (fmt.STEP_MODEL, _model_edit(_tensor_written_twice)),
    "required_input_omitted": (fmt.STEP_MODEL, _model_edit(_required_input_omitted)),
    "huge_declared_shape": (fmt.STEP_MODEL, _model_edit(_huge_declared_shape)),
    "declared_shape_off_by_one": (fmt.STEP_MODEL, _model_edit(_declared_shape_off_by_one)),
    "wrong_tensor_type": (fmt.STEP_MODEL, _model_edit(_wrong_tensor_type)),
    "nan_weight": (fmt.STEP_MODEL, _model_edit(_nan_weight)),
}

CASES: dict[str, str] = {name: names_file for name, (names_file, _) in _CASES.items()}
"""Case name -> the bundle file the ``BundleError`` must name (``"catalog"``: ``catalog.npy``,
or ``catalog_int8_scales.npy`` for an int8 catalog). ``titles_one_short`` needs a bundle with
``item_titles.json``."""


def make_broken(source: Path, target: Path, case: str) -> Path:
    """Copy the bundle ``source`` to ``target`` (which must not exist), break it as ``case`` of
    :data:`CASES` says and re-hash the manifest; returns ``target``."""
    if case not in _CASES:
        raise ValueError(f"unknown case {case!r}; known: {sorted(_CASES)}")
    shutil.copytree(source, target)
    _CASES[case][1](target)
    rehash(target)
    return target


def blow_up_item(source: Path, target: Path, index: int) -> Path:
    """Copy the bundle ``source`` to ``target`` with the row ``index`` of the model's item
    embedding table (the float32 ``[V >= num_items, E]`` constant) set to 3e38 and re-hash: a
    model that passes the proof (it steps items 0 and N - 1) but whose output is not finite
    for that item."""
    shutil.copytree(source, target)
    num_items = _manifest(target)["num_items"]
    model = bytearray((target / fmt.STEP_MODEL).read_bytes())
    fb = _FlatBuffer(bytes(model))
    buffers = [fb.vector(b, _BUFFER_DATA) for b in fb.tables(fb.root(), _MODEL_BUFFERS)]
    for tensor in fb.tables(_graph(fb), _GRAPH_TENSORS):
        shape, kind = fb.vector(tensor, _TENSOR_SHAPE), fb.field(tensor, _TENSOR_TYPE)
        buffer = fb.field(tensor, _TENSOR_BUFFER)
        if shape is None or buffer is None or (kind is not None and model[kind] != _FLOAT32):
            continue
        dims = [fb.u32(shape[1] + 4 * i) for i in range(shape[2])]
        data = buffers[fb.u32(buffer)]
        table = len(dims) == 2 and dims[0] >= num_items
        if table and data is not None and data[2] == dims[0] * dims[1] * 4:
            row = data[1] + 4 * index * dims[1]
            struct.pack_into(f"<{dims[1]}f", model, row, *([3e38] * dims[1]))
            (target / fmt.STEP_MODEL).write_bytes(bytes(model))
            rehash(target)
            return target
    raise AssertionError(f"{source}: no float32 item embedding table of {num_items}+ rows")


# --------------------------------------------------------------------------- random corruption


def _bit_flips(model: bytearray, rng: random.Random, _sites: _Sites) -> str:
    count = rng.randint(1, 8)
    for _ in range(count):
        model[rng.randrange(len(model))] ^= 1 << rng.randrange(8)
    return f"{count} bit flips"


def _byte_overwrite(model: bytearray, rng: random.Random, _sites: _Sites) -> str:
    runs = rng.randint(1, 4)
    for _ in range(runs):
        size = rng.randint(1, 16)
        at = rng.randrange(len(model) - size)
        model[at : at + size] = rng.choice(
            [bytes([rng.randrange(256)]) * size, rng.randbytes(size)]
        )
    return f"{runs} runs of overwritten bytes"


def _truncate(model: bytearray, rng: random.Random, _sites: _Sites) -> str:
    keep = rng.choice(
        [rng.randrange(64), rng.randrange(len(model)), len(model) - rng.randint(1, 64)]
    )
    del model[keep:]
    return f"truncated to {keep} bytes"


def _splice(model: bytearray, rng: random.Random, _sites: _Sites) -> str:
    """Copy a 4-aligned region over, into or instead of another (offsets stay plausible)."""
    size = 4 * rng.randint(1, 64)
    source = 4 * rng.randrange((len(model) - size) // 4)
    target = 4 * rng.randrange((len(model) - size) // 4)
    region = bytes(model[source : source + size])
    mode = rng.choice(["overwrite", "insert", "delete"])
    if mode == "overwrite":
        model[target : target + size] = region
    elif mode == "insert":
        model[target:target] = region
    else:
        del model[target : target + size]
    return f"splice ({mode}) of {size} bytes from {source} at {target}"


def _int_value(old: int, rng: random.Random) -> int:
    signed = old - (1 << 32) if old >= 1 << 31 else old
    return rng.choice(
        [0, -1, 1, signed + 1, signed - 1, signed * 2, rng.randrange(256), 2**31 - 1, -(2**31)]
    )


def _edit_ints(model: bytearray, rng: random.Random, positions: list[int], what: str) -> str:
    if not positions:
        return f"no {what} to edit"
    count = rng.randint(1, 3)
    for pos in rng.sample(positions, min(count, len(positions))):
        struct.pack_into("<i", model, pos, _int_value(struct.unpack_from("<I", model, pos)[0], rng))
    return f"{count} {what} edited"


def _shape_edit(model: bytearray, rng: random.Random, sites: _Sites) -> str:
    return _edit_ints(model, rng, sites.ints["shape"], "tensor shape entries")


def _index_edit(model: bytearray, rng: random.Random, sites: _Sites) -> str:
    if rng.random() < 0.25 and sites.type_bytes:
        pos = rng.choice(sites.type_bytes)
        model[pos] = rng.randrange(20)
        return f"tensor type byte at {pos} set to {model[pos]}"
    kinds = ["index", "opcode", "signature", "graph_io"]
    kind = rng.choice(kinds)
    return _edit_ints(model, rng, sites.ints[kind], f"{kind} fields")


def _length_edit(model: bytearray, rng: random.Random, sites: _Sites) -> str:
    return _edit_ints(model, rng, sites.ints["length"], "vector lengths")


def _weights_edit(model: bytearray, rng: random.Random, sites: _Sites) -> str:
    """Overwrite float weights with NaN, infinity, extremes, a denormal or zero."""
    if not sites.float_buffers:
        return _byte_overwrite(model, rng, sites) + " (no float weights)"
    start, size, float_format = rng.choice(sites.float_buffers)
    width = struct.calcsize(float_format)
    count = rng.randint(1, 4)
    for _ in range(count):
        at = start + width * rng.randrange(size // width)
        struct.pack_into(float_format, model, at, rng.choice(_FLOAT_VALUES[float_format]))
    return f"{count} float weights overwritten in the buffer at {start}"


STRATEGIES: dict[str, Callable[[bytearray, random.Random, _Sites], str]] = {
    "bit_flips": _bit_flips,
    "byte_overwrite": _byte_overwrite,
    "truncate": _truncate,
    "splice": _splice,
    "shape_edit": _shape_edit,
    "index_edit": _index_edit,
    "length_edit": _length_edit,
    "weights_edit": _weights_edit,
}
"""Corruption strategies, by name. Seed ``s`` uses the ``s % len(STRATEGIES)``-th, so any run of
consecutive seeds covers them evenly."""


@dataclass(frozen=True)
class Corruption:
    """One corrupted step model: the seed that made it, the strategy and what it did."""

    seed: int
    strategy: str
    description: str
    content: bytes

    def __str__(self) -> str:
        return f"seed {self.seed} ({self.strategy}: {self.description})"


def corrupt_model(model: bytes, seed: int) -> Corruption:
    """A corrupted copy of the ``.tflite`` bytes ``model``, different from it, made by the
    strategy and choices that ``seed`` determines."""
    names = list(STRATEGIES)
    strategy = names[seed % len(names)]
    rng = random.Random(seed)
    sites = _sites(model)
    for _ in range(100):
        data = bytearray(model)
        description = STRATEGIES[strategy](data, rng, sites)
        if bytes(data) != model:
            return Corruption(seed, strategy, description, bytes(data))
    raise AssertionError(f"seed {seed}: {strategy} left the model unchanged 100 times")


def make_corrupted(source: Path, target: Path, seed: int) -> Corruption:
    """Copy the bundle ``source`` to ``target`` with its ``step.tflite`` replaced by
    :func:`corrupt_model` of it (``seed``) and the manifest re-hashed; returns the corruption."""
    shutil.copytree(source, target)
    corruption = corrupt_model((source / fmt.STEP_MODEL).read_bytes(), seed)
    (target / fmt.STEP_MODEL).write_bytes(corruption.content)
    rehash(target)
    return corruption
