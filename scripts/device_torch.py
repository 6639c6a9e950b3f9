"""PyTorch twins of jaxtrain's Transformer LM and ResNet, for the GPU check's side-by-side.

Same architecture, shapes and optimizer as the jaxtrain models the check times
(``jaxtrain/models/transformer.py``, ``jaxtrain/models/resnet.py``), written the way
PyTorch's own examples write them: ``nn.Module``s, ``F.scaled_dot_product_attention`` (flash
attention on the GPU), bfloat16 ``torch.autocast``, ``AdamW(fused=True)`` on CUDA,
``channels_last`` for convolutions, ``zero_grad``/``backward``/``step`` per batch. With
``compile`` the model goes through ``torch.compile`` first.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm ``x + attn(norm(x))``, ``x + mlp(norm(x))``; GELU (tanh), as jaxtrain's."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm_attn, self.norm_mlp = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp_in = nn.Linear(d_model, mlp_ratio * d_model)
        self.mlp_out = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(batch, length, 3, self.heads, -1)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [batch, heads, T, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, d_model))
        hidden = F.gelu(self.mlp_in(self.norm_mlp(x)), approximate="tanh")
        return x + self.mlp_out(hidden)


class TransformerLM(nn.Module):
    """Token + learned position embeddings, blocks, final norm, logits tied to the embedding."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos_embed = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads, 4) for _ in range(layers))
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos_embed[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm_out(x) @ self.embed.weight.T


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; 1x1 projection + BN shortcut when
    the stride or width changes (jaxtrain's standard block)."""

    def __init__(self, c_in: int, features: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, features, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(features, momentum=0.1)  # flax momentum 0.9
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(features, momentum=0.1)
        self.project = None
        if stride != 1 or c_in != features:
            self.project = nn.Sequential(
                nn.Conv2d(c_in, features, 1, stride, bias=False), nn.BatchNorm2d(features)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (x if self.project is None else self.project(x)))


class ResNet(nn.Module):
    """3x3 stem + BN + ReLU (no pooling), stages of basic blocks (stride 2 from the second
    stage on), global average pool, dense head: jaxtrain's ``ResNet`` for small images."""

    def __init__(self, stages: tuple[int, ...], features: tuple[int, ...], classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, features[0], 3, 1, 1, bias=False), nn.BatchNorm2d(features[0]), nn.ReLU()
        )
        blocks, c_in = [], features[0]
        for stage, (count, width) in enumerate(zip(stages, features, strict=True)):
            for block in range(count):
                blocks.append(BasicBlock(c_in, width, 2 if stage > 0 and block == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def time_training(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    *,
    compile: bool = False,
    channels_last: bool = False,
) -> float:
    """Seconds per training step (AdamW, lr 3e-4, weight decay 1e-4, bfloat16 autocast,
    cross-entropy over the last axis of the outputs) after two warm-up steps."""
    device = inputs.device
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4, fused=cuda)
    forward = torch.compile(model) if compile else model
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            outputs = forward(inputs)
        loss = F.cross_entropy(outputs.float().flatten(0, -2), labels.flatten())
        loss.backward()
        optimizer.step()

    def synchronise() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    synchronise()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise()
    return (time.perf_counter() - started) / steps
