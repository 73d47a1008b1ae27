"""Deterministic counts of what a piece of PyTorch code asks of the device: aten ops, host-device sync points,
uploads of Python scalars and collectives, seen by a `TorchDispatchMode` (counts, not timings: they hold on a CPU).

A *sync point* is an op whose result the host must wait for: reading a value (`.item()`, `bool(t)`, `int(t)`:
`aten._local_scalar_dense`, `aten.is_nonzero`, `aten.equal`), an op with a data-dependent output shape (`nonzero`,
`masked_select`, boolean-mask indexing, `unique`, ...), a copy from a device to the host, and `Tensor.tolist()` /
`Tensor.numpy()` (on a CPU tensor these read memory without an aten op, so they are counted by name). A *scalar
upload* is a 0-dim tensor made from a Python number (`torch.tensor(x)`, e.g. Lightning's `self.log` of a float:
`aten.lift_fresh`, `aten.scalar_tensor`) or a 0-dim host-to-device copy. Collectives are ops of the `c10d` and
`_c10d_functional` namespaces.

Use `count_ops(fn)` for a callable, `OpCounter` as a context manager, or `TrainingStepCounter` (a Lightning callback)
for one whole training step of `Trainer.fit`, from its `on_train_batch_start` to the next one (logging included).
`OpCounter.scope(kind, label)` attributes the ops run inside it to `label` (the innermost open scope of each kind:
phases of a step, module classes of a forward) in `counts.scopes[kind][label]`. `Counts.kernel_ops` leaves out the
view, metadata and allocation ops (`METADATA_OPS`: no kernel launch on any device). Tensors without storage (sparse
gradients, meta tensors) are counted like any other: the counter reads only their device and dimension.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["METADATA_OPS", "Counts", "OpCounter", "TrainingStepCounter", "count_ops", "op_base_name"]

_SYNC_OPS = frozenset({
    "_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique_dim", "unique_consecutive",
    "_unique", "_unique2", "bincount",
})
_UPLOAD_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "scalar_tensor"})
_COLLECTIVE_NAMESPACES = frozenset({"c10d", "_c10d_functional"})
# Ops that launch no kernel on any device: views and relabellings of existing memory, allocations without a fill
# (`empty*`, `set_`), sparse-tensor assembly from existing parts, and profiler range markers.
METADATA_OPS = frozenset({
    "empty", "empty_like", "empty_strided", "set_", "new_empty", "new_empty_strided",
    "t", "t_", "view", "view_as", "_unsafe_view", "_reshape_alias", "transpose", "transpose_", "permute", "detach",
    "detach_", "split", "split_with_sizes", "unbind", "chunk", "expand", "select", "unsqueeze", "unsqueeze_",
    "squeeze", "squeeze_", "alias", "slice", "narrow", "as_strided", "diagonal", "unflatten", "lift_fresh",
    "_indices", "_values", "indices", "values", "is_coalesced", "_nnz", "_sparse_coo_tensor_with_dims_and_tensors",
    "_record_function_enter_new", "_record_function_exit",
})


def op_base_name(name: str) -> str:
    """The op of a dispatched op's name without namespace and overload: "aten.add.Tensor" -> "add"."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else name


@dataclass
class Counts:
    """What one counted run asked of the device.

    Attributes:
        ops: aten (and collective) ops dispatched.
        syncs: host-device sync points (see the module docstring).
        scalar_uploads: 0-dim tensors made from Python numbers or copied from the host.
        collectives: collective ops (all_reduce, all_gather, barrier, ...).
        by_op: ops by name ("aten.add.Tensor": n).
        sync_ops: the sync points by name, for finding them.
        scopes: per scope kind ("phase", "module", ...), the counts of each label's innermost scopes.
        calls: per scope kind, how often each label's scope was entered.
    """

    ops: int = 0
    syncs: int = 0
    scalar_uploads: int = 0
    collectives: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    sync_ops: Counter[str] = field(default_factory=Counter)
    scopes: dict[str, dict[str, Counts]] = field(default_factory=dict)
    calls: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def kernel_ops(self) -> int:
        """Ops that launch a kernel: `ops` without the view, metadata and allocation ops of `METADATA_OPS`."""
        return self.ops - sum(n for name, n in self.by_op.items() if op_base_name(name) in METADATA_OPS)

    def by_name(self) -> Counter[str]:
        """Ops by base name, overloads merged ("add": n)."""
        names: Counter[str] = Counter()
        for name, n in self.by_op.items():
            names[op_base_name(name)] += n
        return names


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    """Whether an `index`/`index_put` call indexes with a boolean mask (a data-dependent shape)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices or ())


def _device_type(value: Any) -> str | None:
    """The device type of a tensor (read from its metadata: sparse and meta tensors have no storage), else None."""
    return value.device.type if isinstance(value, torch.Tensor) else None


def _is_host_scalar_upload(source: Any, source_type: str | None, target_type: str | None) -> bool:
    return source_type != target_type and source_type == "cpu" and isinstance(source, torch.Tensor) \
        and source.dim() == 0


class OpCounter(TorchDispatchMode):
    """Counts the ops dispatched while active into `self.counts` (`with OpCounter() as counter: ...`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self._patched: dict[str, Callable[..., Any]] = {}
        self._open: dict[str, list[str]] = {}  # scope kind -> the stack of open labels

    @contextmanager
    def scope(self, kind: str, label: str) -> Iterator[None]:
        """Attribute the ops run inside to `label` of `kind` (until an inner scope of the same kind opens)."""
        self.enter(kind, label)
        try:
            yield
        finally:
            self.exit(kind)

    def enter(self, kind: str, label: str) -> None:
        """Open a scope (`scope` without the `with`: for hooks that see only its start and end)."""
        self.counts.calls.setdefault(kind, Counter())[label] += 1
        self._open.setdefault(kind, []).append(label)

    def exit(self, kind: str) -> None:
        """Close the innermost open scope of `kind`."""
        self._open[kind].pop()

    def _targets(self) -> list[Counts]:
        """The total counts and those of each kind's innermost open scope."""
        targets = [self.counts]
        for kind, stack in self._open.items():
            if stack:
                targets.append(self.counts.scopes.setdefault(kind, {}).setdefault(stack[-1], Counts()))
        return targets

    def _sync(self, name: str) -> None:
        for counts in self._targets():
            counts.syncs += 1
            counts.sync_ops[name] += 1

    def _classify(self, op: str, args: tuple[Any, ...], kwargs: dict, out: Any) -> str | None:
        """"sync", "upload" or None for one dispatched op (collectives are told by namespace)."""
        bool_index = op in ("index", "index_put", "index_put_", "_index_put_impl_") and _has_bool_index(args)
        sized_repeat = (op == "repeat_interleave" and isinstance(args[-1] if args else None, torch.Tensor)
                        and kwargs.get("output_size") is None)
        if op in _SYNC_OPS or bool_index or sized_repeat:
            return "sync"
        if op in ("_to_copy", "copy_"):
            source, target = (args[0], out) if op == "_to_copy" else (args[1], args[0])
            source_type, target_type = _device_type(source), _device_type(target)
            if source_type != target_type and target_type == "cpu":
                return "sync"
            return "upload" if _is_host_scalar_upload(source, source_type, target_type) else None
        if op in _UPLOAD_OPS and isinstance(out, torch.Tensor) and out.dim() == 0:
            return "upload"
        return None

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name, base = str(func), func._schema.name.split("::")
        namespace, op = base[0], base[-1]
        kind = "collective" if namespace in _COLLECTIVE_NAMESPACES else self._classify(op, args, kwargs, out)
        for counts in self._targets():
            counts.ops += 1
            counts.by_op[name] += 1
            if kind == "collective":
                counts.collectives += 1
            elif kind == "upload":
                counts.scalar_uploads += 1
        if kind == "sync":
            self._sync(name)
        return out

    def add_op(self, name: str) -> None:
        """Count one op dispatched outside this mode under `name` (a stand-in for a fused kernel)."""
        for counts in self._targets():
            counts.ops += 1
            counts.by_op[name] += 1

    def _counting(self, method: str) -> Callable[..., Any]:
        original = self._patched[method]

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if tensor.device.type == "cpu":  # elsewhere the copy to the host is counted as an op
                self._sync(f"Tensor.{method}")
            return original(tensor, *args, **kwargs)

        return counted

    def __enter__(self) -> OpCounter:
        for method in ("tolist", "numpy"):
            self._patched[method] = getattr(torch.Tensor, method)
            setattr(torch.Tensor, method, self._counting(method))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for method, original in self._patched.items():
            setattr(torch.Tensor, method, original)
        self._patched.clear()


def count_ops(fn: Callable[[], Any]) -> Counts:
    """Run `fn()` once under an `OpCounter` and return its counts."""
    with OpCounter() as counter:
        fn()
    return counter.counts


class TrainingStepCounter(L.Callback):
    """Counts training step `step` (0-based batch of the first epoch) of `Trainer.fit`, from its
    `on_train_batch_start` to the next one or the end of training: the step, its callbacks, logging and the
    scheduler, and fetching the next batch. The result is `counts` (None until the step has run).

    Put it first in the trainer's callbacks so that the other callbacks' hooks of the step are inside the window.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self.counts: Counts | None = None
        self._counter: OpCounter | None = None

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the counted window (a subclass may also open scopes or install hooks here)."""
        self._counter = OpCounter().__enter__()

    def _stop(self) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.counts, self._counter = self._counter.counts, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._stop()
        if trainer.global_step == self.step and self.counts is None:
            self._start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()
