"""Exception types of rwkv_ggml.

Every error the library raises derives from :class:`RwkvGgmlError` and also from the
builtin exception a caller would naturally catch (``ValueError`` for bad input, ``OSError``
for I/O, ...), so ``except ValueError`` keeps working for code that does not know us.
The C engine reports failures as a status code plus a message; ``_lib.check`` maps each
status to one of these classes.
"""

from __future__ import annotations


class RwkvGgmlError(Exception):
    """Base class of every error raised by rwkv_ggml."""


class EngineArgumentError(RwkvGgmlError, ValueError):
    """An engine call got a bad argument (wrong type, negative size, NULL where not allowed)."""


class ShapeError(RwkvGgmlError, ValueError):
    """Tensor shapes do not fit the operation."""


class DTypeError(RwkvGgmlError, TypeError):
    """A tensor type the operation does not accept."""


class OutOfMemoryError(RwkvGgmlError, MemoryError):
    """An arena or allocation ran out of memory."""


class ModelIOError(RwkvGgmlError, OSError):
    """A model or state file could not be opened, read or written."""


class ModelFormatError(RwkvGgmlError, ValueError):
    """A model file (or state file) is malformed, truncated or inconsistent."""


class UnsupportedError(RwkvGgmlError, NotImplementedError):
    """A valid request this build does not implement (an RWKV version, a data type, ...)."""


class BusyError(RwkvGgmlError, RuntimeError):
    """An object is in use by another thread."""


class ClosedError(RwkvGgmlError, ValueError):
    """The model (or context) was closed and cannot be used any more."""


class InternalError(RwkvGgmlError, RuntimeError):
    """A bug in rwkv_ggml: please report it."""


class ConstraintError(RwkvGgmlError, ValueError):
    """A bad structured-output request (JSON schema, grammar, regular expression or response_format), or a
    constraint used wrongly (e.g. the same one for two generations)."""
