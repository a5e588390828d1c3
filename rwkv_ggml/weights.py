"""Where a model's weights live in memory: the two placements of the loader.

Per-token inference streams every weight once per token, so its speed is the memory bandwidth of
the pages the weights sit in. Measured on the project's machines (2 threads): ~38 GB/s from 4 KiB
pages, ~55 GB/s from 2 MiB transparent huge pages. Hence:

* ``"hugepage"``: read the file into an anonymous mapping advised with MADV_HUGEPAGE, each tensor at
  a 64-byte aligned offset. One private copy of the weights (the file's page cache is not part of
  the process), fastest to compute from; loading reads the whole file.
* ``"mmap"``: map the file read-only and point the matrices into it. Lazy (only touched pages are
  read), shared with other processes through the page cache, but 4 KiB pages. The format aligns
  nothing, so the small tensors (vectors, anything under 1 MiB) are copied into aligned memory: they
  are read element by element by the element-wise kernels; the matrices are only read by kernels that
  load unaligned data safely.

Either way the process holds exactly one copy of the weights.
"""

from __future__ import annotations

import mmap

import numpy as np

from .errors import EngineArgumentError, ModelIOError
from .fileformat import DType, ModelFile, TensorRecord

PLACEMENTS = ("hugepage", "mmap")
DEFAULT_PLACEMENT = "hugepage"
_ALIGN = 64
_HUGE = 2 << 20
_SMALL = 1 << 20  # mmap placement: tensors below this are copied to aligned memory


class WeightStore:
    """The weights of one model file in one placement; ``raw(name)`` gives a numpy view of a tensor's
    bytes."""

    def __init__(self, mf: ModelFile, placement: str = DEFAULT_PLACEMENT) -> None:
        if placement not in PLACEMENTS:
            raise EngineArgumentError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.placement = placement
        self._mf = mf
        self._anon: mmap.mmap | None = None
        self._offsets: dict[str, int] = {}
        if placement == "hugepage":
            self._load_anonymous(mf, list(mf.tensors))
        else:
            self._load_anonymous(
                mf, [n for n, r in mf.tensors.items() if len(r.ne) != 2 or r.nbytes < _SMALL]
            )

    def _load_anonymous(self, mf: ModelFile, names: list[str]) -> None:
        """Copies the named tensors into an anonymous mapping (huge pages advised), 64-byte aligned."""
        offset = 0
        for name in names:
            rec = mf.tensors[name]
            offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
            self._offsets[name] = offset
            offset += rec.nbytes
        # huge pages pay only for the big weight copy; a small copy stays a plain 4 KiB-page mapping
        size = (offset + _HUGE - 1) // _HUGE * _HUGE if offset >= _HUGE else max(offset, 1)
        try:
            anon = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as exc:
            raise ModelIOError(
                f"cannot allocate {size} bytes to load '{mf.path}' ({exc.strerror or exc}); "
                "placement='mmap' maps the file instead of copying it"
            ) from exc
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                anon.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass  # THP disabled on this kernel: still correct, only slower
        try:
            with open(mf.path, "rb") as f, memoryview(anon) as view:
                held = getattr(mf, "held", {})  # a GGUF model's tensors computed at load (gguf_model)
                for name in names:
                    rec = mf.tensors[name]
                    start = self._offsets[name]
                    if name in held:
                        view[start : start + rec.nbytes] = held[name].reshape(-1).view(np.uint8).data
                        continue
                    f.seek(rec.offset)
                    got = f.readinto(view[start : start + rec.nbytes])
                    if got != rec.nbytes:
                        raise ModelIOError(
                            f"{mf.path}: short read of tensor '{name}' (file changed while loading?)"
                        )
        except OSError as exc:
            anon.close()
            raise ModelIOError(f"cannot read '{mf.path}': {exc}") from exc
        except BaseException:
            anon.close()
            raise
        self._anon = anon

    def record(self, name: str) -> TensorRecord:
        return self._mf.tensors[name]

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes: float32/float16 arrays in numpy shape, or uint8 rows for block types."""
        rec = self._mf.tensors[name]
        anon = self._anon
        if name not in self._offsets or anon is None:  # left in the file (mmap placement), or closed
            return self._mf.array(name)
        flat = np.frombuffer(anon, dtype=np.uint8, count=rec.nbytes, offset=self._offsets[name])
        if rec.dtype == DType.F32:
            return flat.view(np.float32).reshape(rec.shape)
        if rec.dtype == DType.F16:
            return flat.view(np.float16).reshape(rec.shape)
        rows = int(np.prod(rec.ne[1:]))
        return flat.reshape(rows, rec.nbytes // rows)

    def close(self) -> None:
        """Releases the memory. Every array obtained from ``raw`` must have been dropped before."""
        self._mf.close()
        if self._anon is not None:
            try:
                self._anon.close()
            except BufferError:  # pragma: no cover - a view is still alive somewhere; the GC frees it later
                pass
            self._anon = None
