"""RMSNorm and rotary embeddings in fewer ops, for training Llama-family models.

Why: on a CPU every element-wise op over a batch-sized tensor is a parallel region of torch's
OpenMP pool, and with sleeping waits (``OMP_WAIT_POLICY=PASSIVE``, robustmo's default) each
region costs tens of microseconds of waking threads, however little work it does. Autograd
runs transformers' RMSNorm as ~14 such ops (forward and backward) and its rotary embedding
as ~28 per layer (``rotate_half``'s slices, negation and concatenation, and their zero-filled
gradients); the two ``autograd.Function``s below do the same maths in 10 and 12 ops with
hand-written backward passes. On the tiny preset that is ~13 % more tokens/s (bench/bench_mfu.py).

``with FusedOps(model):`` swaps them in for robustmo's training forward passes and puts the
model's own back after; ``fused_ops_work(model, batch)`` checks on a real batch that the
logits and gradients stay the same, and training uses them only then, so a model that
computes differently keeps its own ops. RMSNorm is replaced for float32 inputs only (a
half-precision model keeps its own, which computes in float32 and casts back).
"""

from __future__ import annotations

import inspect
import sys

import torch


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


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """Drop-in for transformers' ``apply_rotary_pos_emb`` (same signature and result)."""
    return _Rotary.apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))


_ROTARY_PARAMETERS = list(inspect.signature(apply_rotary_pos_emb).parameters)


def _rms_norm_forward(module):
    own = module.forward  # the class's forward, bound

    def forward(hidden_states):
        if hidden_states.dtype == module.weight.dtype == torch.float32:
            return _RMSNorm.apply(hidden_states, module.weight, module.variance_epsilon)
        return own(hidden_states)
    return forward


def _targets(model) -> tuple[list, list]:
    """The RMSNorm modules to patch (transformers' layout: a 1-d ``weight`` and ``variance_epsilon``,
    no instance-level forward of someone else's, such as accelerate's hooks) and the modelling
    modules whose ``apply_rotary_pos_emb`` has transformers' Llama signature."""
    norms, modelling = [], {}
    for m in model.modules():
        cls = type(m)
        if (cls.__name__.endswith("RMSNorm") and isinstance(getattr(m, "weight", None), torch.nn.Parameter)
                and m.weight.dim() == 1 and isinstance(getattr(m, "variance_epsilon", None), float)
                and "forward" not in m.__dict__):
            norms.append(m)
        module = sys.modules.get(cls.__module__)
        fn = getattr(module, "apply_rotary_pos_emb", None)
        if callable(fn) and fn is not apply_rotary_pos_emb and cls.__name__.endswith("Attention"):
            try:
                if list(inspect.signature(fn).parameters) == _ROTARY_PARAMETERS:
                    modelling[module.__name__] = module
            except (TypeError, ValueError):
                pass
    return norms, list(modelling.values())


class FusedOps:
    """``with FusedOps(model):`` runs ``model``'s RMSNorms and its modelling code's rotary
    embedding through the fused ops above, and puts the model's own back on exit (its
    targets are found once, so entering costs next to nothing). The rotary function is
    replaced in its (process-wide) modelling module: other models of that architecture use
    it too meanwhile, with the same results. Only the forward needs to be inside: the
    backward pass is recorded in the graph."""

    def __init__(self, model):
        self.norms, self.modelling = _targets(model)
        self.originals: list = []

    def __bool__(self) -> bool:
        return bool(self.norms or self.modelling)

    def __enter__(self):
        self.originals = [(module, module.apply_rotary_pos_emb) for module in self.modelling]
        for m in self.norms:
            m.forward = _rms_norm_forward(m)
        for module in self.modelling:
            module.apply_rotary_pos_emb = apply_rotary_pos_emb
        return self

    def __exit__(self, *exc):
        for m in self.norms:
            m.__dict__.pop("forward", None)
        for module, fn in self.originals:
            module.apply_rotary_pos_emb = fn
        return False


def fused_ops_work(model, batch: dict) -> bool:
    """Does ``model`` give the same logits, and the same gradients with respect to its input
    embeddings and its trainable RMSNorm weights, with the fused ops as with its own? One
    comparison on a few examples (``input_ids``, ``attention_mask``, ``labels``); False when
    there is nothing to fuse or the model computes differently."""
    fused = FusedOps(model)
    if not fused:
        return False
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    weights = [m.weight for m in fused.norms if m.weight.requires_grad]
    was_training = model.training
    model.eval()  # no dropout: the two passes must see the same computation
    try:
        own = _logits_and_grads(model, batch, weights)
        with fused:
            new = _logits_and_grads(model, batch, weights)
        return all(a.shape == b.shape and bool(torch.isfinite(b).all())
                   and float((a - b).norm()) <= 1e-4 * float(a.norm()) + 1e-8 for a, b in zip(own, new))
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return False
    finally:
        model.train(was_training)


def _logits_and_grads(model, batch: dict, weights: list) -> list:
    """Logits, and the gradients of their cross-entropy on ``labels`` with respect to the input
    embeddings and ``weights``, via ``torch.autograd.grad`` (nothing lands in ``.grad``)."""
    import torch.nn.functional as F

    from robustmo.core.training import IGNORE_INDEX

    leaf = {}

    def as_leaf(module, args, output):
        leaf["embeds"] = output.detach().requires_grad_()
        return leaf["embeds"]

    hook = model.get_input_embeddings().register_forward_hook(as_leaf)
    try:
        with torch.enable_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits.float()
            labels = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
            grads = torch.autograd.grad(loss, [leaf["embeds"], *weights])
    finally:
        hook.remove()
    return [logits.detach(), *grads]
