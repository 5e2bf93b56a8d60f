"""torch integration: a model's ``state_dict`` as one float64 vector and back.

This is the only secagg module that imports torch at top level; ``import secagg``
never imports it (torch is an optional dependency, imported only when used).

Secure aggregation works on flat real vectors. :func:`flatten_state_dict` turns
a state dict (or an ``nn.Module``) into such a vector plus a
:class:`StateDictSpec` recording each entry's name, shape, dtype and offset;
:func:`unflatten_state_dict` rebuilds a state dict with the same dtypes and
shapes.

Policy for non-floating entries (integer and bool buffers, e.g. BatchNorm's
``num_batches_tracked``): they are **not** part of the aggregated vector.
Averaging a counter as a float and rounding it back is meaningless, and sending
it would reveal a per-client quantity (how many batches a hospital trained on)
outside the protected aggregate. Such entries never leave the client; on the way
back they are taken from ``base`` (the server's global model) if given, else
from the values recorded in the spec. Floating buffers (BatchNorm's
``running_mean``/``running_var``) are averaged like parameters, the usual FedAvg
choice; pass ``include_buffers=False`` to keep them local/global as well.

Every function accepts tensors wherever numpy arrays are accepted;
:func:`as_numpy` is the conversion helper (tensor, module, state dict, array or
sequence -> float64 numpy).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .errors import ParameterError

__all__ = [
    "EntrySpec",
    "StateDictSpec",
    "as_numpy",
    "is_aggregated_dtype",
    "flatten_state_dict",
    "unflatten_state_dict",
    "unflatten",
    "model_delta",
    "apply_delta",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def is_aggregated_dtype(dtype: torch.dtype) -> bool:
    """True for the real floating dtypes that go into the aggregated vector."""
    return dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class EntrySpec:
    """One state-dict entry: where it lives in the vector (if aggregated)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int  # start in the vector; -1 when not aggregated
    numel: int
    aggregated: bool
    is_buffer: bool = False

    def describe(self) -> str:
        return f"{self.name}: shape {self.shape}, {str(self.dtype).replace('torch.', '')}"


@dataclass(frozen=True, eq=False)
class StateDictSpec:
    """Layout of a flattened state dict.

    ``kept`` holds copies of the entries that are not aggregated (integer/bool
    buffers, and floating buffers when ``include_buffers=False``)."""

    entries: tuple[EntrySpec, ...]
    size: int
    kept: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def aggregated_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries if e.aggregated)

    def same_layout(self, other: "StateDictSpec") -> bool:
        return [(e.name, e.shape, e.dtype, e.aggregated) for e in self.entries] == [
            (e.name, e.shape, e.dtype, e.aggregated) for e in other.entries
        ]

    def check_layout(self, other: "StateDictSpec", who: str = "state dict") -> None:
        """Raise :class:`ParameterError` naming the first difference with ``other``
        (``self`` is the expected layout, e.g. the global model)."""
        mine = {e.name: e for e in self.entries}
        theirs = {e.name: e for e in other.entries}
        missing = [n for n in mine if n not in theirs]
        extra = [n for n in theirs if n not in mine]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}")
            if extra:
                parts.append(f"unexpected {extra[:5]}")
            raise ParameterError(f"{who} does not match the model: " + ", ".join(parts))
        for name, exp in mine.items():
            got = theirs[name]
            if got.shape != exp.shape:
                raise ParameterError(
                    f"{who}: entry {name!r} has shape {got.shape}, the model has {exp.shape}")
            if got.dtype != exp.dtype:
                raise ParameterError(
                    f"{who}: entry {name!r} has dtype {got.dtype}, the model has {exp.dtype}")
        if self.size != other.size:  # pragma: no cover - implied by the checks above
            raise ParameterError(f"{who}: vector size {other.size}, the model has {self.size}")


def _state_dict_of(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return obj
    raise ParameterError(f"expected a state dict or a torch.nn.Module, got {type(obj).__name__}")


def _buffer_names(obj: Any) -> set[str]:
    if isinstance(obj, torch.nn.Module):
        return {name for name, _ in obj.named_buffers()}
    return set()


def flatten_state_dict(
    state_dict: Mapping[str, Any] | torch.nn.Module,
    spec: StateDictSpec | None = None,
    *,
    include_buffers: bool = True,
    buffer_names: Iterable[str] | None = None,
    who: str = "state dict",
) -> tuple[np.ndarray, StateDictSpec]:
    """The aggregated entries of ``state_dict`` as one float64 vector, and its spec.

    Floating entries are concatenated in the state dict's order. With ``spec``
    (e.g. the global model's), the layout must match it exactly, else a
    :class:`ParameterError` naming the first difference (and ``who``). Values
    must be finite. ``include_buffers=False`` leaves floating buffers out too;
    buffers are recognised from a module, or listed in ``buffer_names`` (for a
    plain state dict, BatchNorm's ``running_mean``/``running_var`` are recognised
    by name).
    """
    sd = _state_dict_of(state_dict)
    buffers = set(buffer_names) if buffer_names is not None else _buffer_names(state_dict)
    entries: list[EntrySpec] = []
    kept: dict[str, torch.Tensor] = {}
    chunks: list[np.ndarray] = []
    offset = 0
    for name, value in sd.items():
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if t.is_complex():
            raise ParameterError(f"{who}: entry {name!r} is complex; only real tensors can be aggregated")
        is_buffer = name in buffers or name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
        aggregated = is_aggregated_dtype(t.dtype) and (include_buffers or not is_buffer)
        shape = tuple(int(s) for s in t.shape)
        numel = int(t.numel())
        if aggregated:
            arr = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
            chunks.append(arr)
            entries.append(EntrySpec(name, shape, t.dtype, offset, numel, True, is_buffer))
            offset += numel
        else:
            kept[name] = t.detach().to("cpu").clone()
            entries.append(EntrySpec(name, shape, t.dtype, -1, numel, False, is_buffer))
    vector = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float64)
    vector = np.array(vector, dtype=np.float64, copy=True)
    new_spec = StateDictSpec(tuple(entries), offset, kept)
    if spec is not None:
        spec.check_layout(new_spec, who)
    if not np.all(np.isfinite(vector)):
        bad = [e.name for e in entries if e.aggregated
               and not np.all(np.isfinite(vector[e.offset:e.offset + e.numel]))]
        raise ParameterError(f"{who}: NaN or infinite values in {bad[:5]}")
    return vector, new_spec


def unflatten_state_dict(
    vector: Any,
    spec: StateDictSpec,
    base: Mapping[str, Any] | torch.nn.Module | None = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Rebuild a state dict from ``vector`` laid out as ``spec``.

    Aggregated entries are cast back to their dtype and shape. Entries that are
    not aggregated (integer buffers, ...) come from ``base`` if given (the
    server's global model), else from the copies recorded in ``spec``."""
    vec = as_numpy(vector).reshape(-1)
    if vec.size != spec.size:
        raise ParameterError(f"vector has {vec.size} entries, the model has {spec.size}")
    if not np.all(np.isfinite(vec)):
        raise ParameterError("vector contains NaN or infinite values")
    base_sd = _state_dict_of(base) if base is not None else None
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for e in spec.entries:
        if e.aggregated:
            chunk = vec[e.offset:e.offset + e.numel].reshape(e.shape)
            out[e.name] = torch.from_numpy(np.array(chunk, copy=True)).to(e.dtype)
        else:
            if base_sd is not None:
                if e.name not in base_sd:
                    raise ParameterError(f"base state dict has no entry {e.name!r}")
                src = base_sd[e.name]
                src = src if isinstance(src, torch.Tensor) else torch.as_tensor(src)
            else:
                src = spec.kept[e.name]
            if tuple(src.shape) != e.shape:
                raise ParameterError(f"base entry {e.name!r} has shape {tuple(src.shape)}, expected {e.shape}")
            out[e.name] = src.detach().to("cpu", dtype=e.dtype).clone()
    return out


unflatten = unflatten_state_dict


def model_delta(new: Mapping[str, Any] | torch.nn.Module, old: Mapping[str, Any] | torch.nn.Module,
                *, include_buffers: bool = True, who: str = "update") -> np.ndarray:
    """``flatten(new) - flatten(old)`` in float64, over the aggregated entries;
    ``new`` must have ``old``'s layout (else a :class:`ParameterError` naming
    ``who`` and the entry)."""
    old_vec, old_spec = flatten_state_dict(old, include_buffers=include_buffers, who="base model")
    new_vec, _ = flatten_state_dict(new, old_spec, include_buffers=include_buffers,
                                    buffer_names=_buffer_names(old) or None, who=who)
    return new_vec - old_vec


def apply_delta(base: Mapping[str, Any] | torch.nn.Module, delta: Any, server_lr: float = 1.0, *,
                include_buffers: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """``base + server_lr * delta`` as a state dict (FedAvg's server step);
    non-aggregated entries are kept from ``base``."""
    vec, spec = flatten_state_dict(base, include_buffers=include_buffers, who="base model")
    d = as_numpy(delta).reshape(-1)
    if d.size != spec.size:
        raise ParameterError(f"delta has {d.size} entries, the model has {spec.size}")
    return unflatten_state_dict(vec + float(server_lr) * d, spec, base)


def as_numpy(update: Any) -> np.ndarray:
    """Any update as a float64 numpy array.

    A tensor keeps its shape (detached, moved to the CPU); a module or a state
    dict becomes its flattened vector (see :func:`flatten_state_dict`); arrays
    and sequences go through ``np.asarray``. Complex values are refused."""
    if isinstance(update, torch.Tensor):
        if update.is_complex():
            raise ParameterError("complex tensors cannot be aggregated")
        return update.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if isinstance(update, (torch.nn.Module, Mapping)):
        return flatten_state_dict(update)[0]
    arr = np.asarray(update)
    if np.iscomplexobj(arr):
        raise ParameterError("complex values cannot be aggregated")
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"update is not numeric: {exc}") from None
