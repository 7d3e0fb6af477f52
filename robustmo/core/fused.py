"""RMSNorm and rotary embeddings in fewer ops, for training Llama-family models.

Why: on a CPU every element-wise op over a batch-sized tensor is a parallel region of torch's
OpenMP pool, and with sleeping waits (``OMP_WAIT_POLICY=PASSIVE``, robustmo's default) each
region costs tens of microseconds of waking threads, however little work it does. Autograd
runs transformers' RMSNorm as ~14 such ops (forward and backward) and its rotary embedding
as ~28 per layer (``rotate_half``'s slices, negation and concatenation, and their zero-filled
gradients); the two ``autograd.Function``s below do the same maths in 10 and 12 ops with
hand-written backward passes. On the tiny preset that is ~10 % more tokens/s (bench/bench_mfu.py).

``with FusedOps(model):`` swaps them in for robustmo's training steps (forward and backward:
a backward that recomputes activations, as gradient checkpointing does, must see the same
ops) and puts the model's own back after; ``fused_ops_work(model, batch)`` checks on a real
batch that the logits and gradients stay the same, and training uses them only then, so a
model that computes differently keeps its own ops. Both apply to float32 tensors only.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import weakref

import torch
from torch.autograd.function import once_differentiable


class _RMSNorm(torch.autograd.Function):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension (transformers' LlamaRMSNorm)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        # one reduction (the norm) instead of pow + mean; the per-row scalars are too small to matter
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        rstd = torch.rsqrt(norm.square_().div_(x.shape[-1]).add_(eps))
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight

    @staticmethod
    @once_differentiable  # the saved xhat and rstd are cut off from x: no second derivatives
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved_tensors
        grad_xhat = grad * weight
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * xhat).reshape(-1, xhat.shape[-1]).sum(0)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx of x * rstd(x): rstd * (g - xhat * mean(g * xhat)), per row
            dot = (grad_xhat * xhat).mean(-1, keepdim=True)
            grad_x = grad_xhat.addcmul_(xhat, dot, value=-1).mul_(rstd)
        return grad_x, grad_weight, None


class _Rotary(torch.autograd.Function):
    """``x * cos + rotate_half(x) * sin`` for queries and keys, ``rotate_half(x) = cat(-x2, x1)``."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, 1), _rotate(k, cos, sin, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q, grad_k):
        cos, sin = ctx.saved_tensors
        return _rotate(grad_q, cos, sin, -1), _rotate(grad_k, cos, sin, -1), None, None


def _rotate(x, cos, sin, sign: int):
    """sign 1: ``(x1 c1 - x2 s1, x2 c2 + x1 s2)`` for the two halves of the last dimension, without
    materialising ``rotate_half(x)``; sign -1: its transpose (the backward), ``(g1 c1 + g2 s2, g2 c2 - g1 s1)``."""
    h = x.shape[-1] // 2
    s1, s2 = (sin[..., :h], sin[..., h:]) if sign > 0 else (sin[..., h:], sin[..., :h])
    out = x * cos
    out[..., :h].addcmul_(x[..., h:], s1, value=-sign)
    out[..., h:].addcmul_(x[..., :h], s2, value=sign)
    return out


def _fused(*tensors) -> bool:
    """Only float32 takes the fused ops: in half precision they would round differently from the
    model's own (which computes RMSNorm in float32 and casts back), so it keeps those."""
    return all(t.dtype == torch.float32 for t in tensors)


def _rotary_forward(own, q, k, cos, sin, unsqueeze_dim=1):
    """What replaces a modelling module's ``apply_rotary_pos_emb`` (``own``) inside ``FusedOps``;
    learnt cos/sin (which the fused backward gives no gradient) keep ``own`` too."""
    if _fused(q, k, cos, sin) and not (cos.requires_grad or sin.requires_grad):
        return _Rotary.apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))
    return own(q, k, cos, sin, unsqueeze_dim)


def _rms_norm_forward(module, hidden_states):
    """What replaces an RMSNorm module's ``forward`` inside ``FusedOps`` (a ``functools.partial``
    of a module-level function: a model copied or pickled meanwhile stays copyable)."""
    if _fused(hidden_states, module.weight):
        return _RMSNorm.apply(hidden_states, module.weight, module.variance_epsilon)
    return type(module).forward(module, hidden_states)


def _ours(fn, func) -> bool:
    return isinstance(fn, functools.partial) and fn.func is func


_ROTARY_PARAMETERS = ["q", "k", "cos", "sin", "unsqueeze_dim"]
_LOCK = threading.Lock()
_NORM_DEPTH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> FusedOps blocks it is in
_ROTARY_OWN: dict[str, list] = {}  # modelling module name -> [its own apply_rotary_pos_emb, blocks it is in]


def _wrapped(fn):
    """``fn``, or the function a kernels-hub wrapper calls. With the ``kernels`` package installed
    (transformers >= 5.25 requires it), transformers' ``apply_rotary_pos_emb`` is a module of class
    ``Func`` whose forward calls the original function unless the model was given a hub kernel
    (``use_kernels=True``, which robustmo never asks for); its own signature is (*args, **kwargs)."""
    if isinstance(fn, torch.nn.Module) and type(fn).__name__ == "Func":
        try:
            func = inspect.getclosurevars(type(fn).forward).nonlocals.get("func")
        except (TypeError, ValueError):
            return fn
        if callable(func):
            return func
    return fn


def _targets(model) -> tuple[list, list]:
    """The RMSNorm modules to patch (transformers' layout: a 1-d ``weight`` and ``variance_epsilon``;
    not one whose instance-level forward someone else set, such as accelerate's hooks) and the
    modelling modules whose own ``apply_rotary_pos_emb`` has transformers' Llama signature."""
    norms, modelling = [], {}
    for m in model.modules():
        cls = type(m)
        if (cls.__name__.endswith("RMSNorm") and isinstance(getattr(m, "weight", None), torch.nn.Parameter)
                and m.weight.dim() == 1 and isinstance(getattr(m, "variance_epsilon", None), float)
                and ("forward" not in m.__dict__ or _ours(m.__dict__["forward"], _rms_norm_forward))):
            norms.append(m)
        module = sys.modules.get(cls.__module__)
        if not cls.__name__.endswith("Attention") or module is None:
            continue
        with _LOCK:
            own = _ROTARY_OWN.get(module.__name__, [getattr(module, "apply_rotary_pos_emb", None)])[0]
        try:
            if callable(own) and list(inspect.signature(_wrapped(own)).parameters) == _ROTARY_PARAMETERS:
                modelling[module.__name__] = module
        except (TypeError, ValueError):
            pass
    return norms, list(modelling.values())


class FusedOps:
    """``with FusedOps(model):`` runs ``model``'s float32 RMSNorms and its modelling code's rotary
    embedding through the fused ops above, and puts the model's own back on exit (its targets
    are found once, so entering costs next to nothing). Blocks nest and may overlap for several
    models: each op is restored when the last block using it ends. The rotary function is
    replaced in its (process-wide) modelling module: other models of that architecture use it
    too meanwhile, with the same results. A copy of the model made inside a block keeps the
    fused RMSNorm forward (same results)."""

    def __init__(self, model):
        self.norms, self.modelling = _targets(model)

    def __bool__(self) -> bool:
        return bool(self.norms or self.modelling)

    def __enter__(self):
        with _LOCK:
            for m in self.norms:
                if _NORM_DEPTH.get(m, 0) == 0:
                    m.forward = functools.partial(_rms_norm_forward, m)
                _NORM_DEPTH[m] = _NORM_DEPTH.get(m, 0) + 1
            for module in self.modelling:
                entry = _ROTARY_OWN.setdefault(module.__name__, [module.apply_rotary_pos_emb, 0])
                if entry[1] == 0:
                    module.apply_rotary_pos_emb = functools.partial(_rotary_forward, entry[0])
                entry[1] += 1
        return self

    def __exit__(self, *exc):
        with _LOCK:
            for m in self.norms:
                _NORM_DEPTH[m] -= 1
                if _NORM_DEPTH[m] == 0:
                    del _NORM_DEPTH[m]
                    m.__dict__.pop("forward", None)
            for module in self.modelling:
                entry = _ROTARY_OWN[module.__name__]
                entry[1] -= 1
                if entry[1] == 0:
                    module.apply_rotary_pos_emb = entry[0]
                    del _ROTARY_OWN[module.__name__]
        return False


def fused_ops_work(model, batch: dict, *, sparse: bool = False) -> bool:
    """Does ``model`` give the same completion logits, and the same gradients with respect to its
    input embeddings and its trainable RMSNorm weights, with the fused ops as with its own?
    One comparison on ``batch`` (a few examples, laid out as training lays them out), through
    the same forward as training (``sparse``: logits only at completion positions), in training
    mode with the same random seed for both passes (dropout draws the same masks); False when
    there is nothing to fuse or the model computes differently."""
    fused = FusedOps(model)
    if not fused:
        return False
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    weights = [m.weight for m in fused.norms if m.weight.requires_grad]
    was_training = model.training
    model.train()
    try:
        own = _logits_and_grads(model, batch, weights, sparse)
        with fused:
            new = _logits_and_grads(model, batch, weights, sparse)
        return all(a.shape == b.shape and bool(torch.isfinite(b).all())
                   and float((a - b).norm()) <= 1e-4 * float(a.norm()) + 1e-8 for a, b in zip(own, new))
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError):
        return False
    finally:
        model.train(was_training)


def _logits_and_grads(model, batch: dict, weights: list, sparse: bool) -> list:
    """Completion logits, and the gradients of their summed cross-entropy with respect to the
    input embeddings and ``weights``, via ``torch.autograd.grad`` (nothing lands in ``.grad``)."""
    import torch.nn.functional as F

    from robustmo.core.batches import completion_logits

    leaf = {}

    def as_leaf(module, args, output):
        leaf["embeds"] = output.detach().requires_grad_()
        return leaf["embeds"]

    device = batch["input_ids"].device
    hook = model.get_input_embeddings().register_forward_hook(as_leaf)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad():
            torch.manual_seed(0)
            logits, targets = completion_logits(model, batch, sparse=sparse)
            loss = F.cross_entropy(logits.float(), targets, reduction="sum")
            grads = torch.autograd.grad(loss, [leaf["embeds"], *weights])
    finally:
        hook.remove()
    return [logits.detach(), *grads]
