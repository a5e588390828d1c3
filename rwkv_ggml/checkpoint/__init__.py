"""Read official RWKV checkpoints (``.pth`` and ``.safetensors``) without PyTorch.

Why not ``torch.load``: it needs PyTorch (hundreds of MB) and a ``.pth`` file is a pickle,
which can run arbitrary code while it is being read. Here a ``.pth`` is parsed as what it
really is, a zip archive holding ``<top>/data.pkl`` (a pickle describing the state dict)
and one raw little-endian byte blob per storage, ``<top>/data/<key>``. The pickle is read by
a :class:`pickle.Unpickler` subclass that resolves only the handful of globals a state dict
needs (tensor-rebuild functions, ``OrderedDict``, storage types) to our own inert stand-ins;
any other global (``os.system``, ``builtins.eval``, ...) is refused *before* anything could
call it. Tensor bytes are never unpickled: they are memory-mapped from the archive (torch
stores members uncompressed) and copied out one tensor at a time, so peak memory stays at
about one tensor beyond the mapped file.

Safetensors files are read the same way: the format is an 8-byte little-endian header
length, a JSON header (name -> dtype, shape, data offsets) and the raw data, so parsing it
ourselves costs a few lines and handles ``BF16``, which numpy (and therefore the
``safetensors`` library's numpy backend) cannot represent. BF16 is widened to float32 on
read, exactly.

Key layouts: besides the official names (``emb.weight``, ``blocks.N.att.key.weight``, ...)
the Hugging Face transformers RWKV layout (v4, and the community v5/v6 models that follow
it: ``rwkv.embeddings.weight``, ``rwkv.blocks.N.attention.*``, ``rwkv.blocks.N.feed_forward.*``,
``pre_ln``, ``time_mix_key``, ...) and the flash-linear-attention RWKV-7 layout used by the
RWKV-7 "HF" releases (``model.layers.N.attn.*_proj``, ``*_lora.lora.{0,2}``, ...) are
recognised and presented under the official names and shapes, so the converter only ever
sees one layout.

Modules: ``_tensor`` (element types, lazy strided tensors), ``_container`` (the
:class:`Checkpoint` mapping), ``_pth`` (zip archive and restricted unpickler), ``_safetensors``,
``layouts`` (Hugging Face / flash-linear-attention names), ``_load`` (:func:`load_checkpoint`),
``state_tuning`` (:func:`initial_state_from_checkpoint`).
"""

from __future__ import annotations

from ._container import Checkpoint
from ._load import load_checkpoint
from ._tensor import LazyTensor
from .state_tuning import initial_state_from_checkpoint

__all__ = ["Checkpoint", "LazyTensor", "initial_state_from_checkpoint", "load_checkpoint"]
