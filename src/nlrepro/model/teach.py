"""The teach signal: the LM loss's own gradient at the top of the residual stream.

    delta_t = d CE(z_t, y_t) / d h_t,   z_t = RMSNorm(h_t) E^T   (tied head)
            = J_norm(h_t)^T [ g * ((softmax(z_t) - onehot(y_t)) E) ]

where h_t is the residual stream entering the final RMSNorm (weight g) and y_t the next
token. Per token and NOT divided by batch or sequence size, so ``teach_scale`` means the
same at every batch and sequence length (docs/MODEL_DECISIONS.md §6). Computed analytically
without autograd and returned detached (CMS uses stopgrad(delta)); the model passes the
logits z_t its forward already computed, so the vocabulary projection is not done twice
(without them they are recomputed from h_t).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from nlrepro.model.layers import clip_per_token


def teach_signal(hidden: Tensor, targets: Tensor, norm_weight: Tensor, embedding: Tensor, eps: float,
                 logits: Optional[Tensor] = None) -> Tensor:
    """delta (B, n, d) from the pre-norm stream hidden (B, n, d) and targets (B, n);
    ``logits`` (B, n, V), when given, are z_t = RMSNorm(h_t) E^T as the forward computed them."""
    with torch.no_grad():
        inv_rms = torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
        normed = hidden * inv_rms
        if logits is None:
            logits = (normed * norm_weight) @ embedding.T
        grad_logits = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        grad_logits.scatter_add_(-1, targets[..., None], grad_logits.new_full(targets[..., None].shape, -1.0))
        grad_normed = (grad_logits.to(embedding.dtype) @ embedding) * norm_weight   # d CE / d n_t
        return inv_rms * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))


def teach_update_signal(delta: Tensor, teach_scale: float, teach_clip: Optional[float],
                        stats=None) -> Tensor:
    """u_t = clip(teach_scale * delta_t, teach_clip): what the CMS levels learn from. With
    ``stats`` (an UpdateStats) the share of tokens clipped goes to ``clip_rate/teach``."""
    u = teach_scale * delta
    if stats is not None and teach_clip is not None:
        stats.add("clip_rate/teach", (u.detach().norm(dim=-1) > teach_clip).float().mean())
    return clip_per_token(u, teach_clip)
