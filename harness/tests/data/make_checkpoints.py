#!/usr/bin/env python3
"""Generates the small checkpoints in the official MPCViT layout that
harness/tests/import.rs reads, and their PyTorch logits.

Run once (PyTorch from PyPI; not a runtime dependency of mpcvit-rs):
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python harness/tests/data/make_checkpoints.py

The modules below are written for this test from the paper's description
and the official state-dict names (src/vit.py, src/utils/transformers.py,
src/utils/tokenizer.py of PKU-SEC-Lab/mpcvit): a conv tokenizer with
kernel = stride = patch, a class token, learnable positions, CCT-style
encoder layers (pre-norm attention, residual, norm1, MLP, residual) whose
attention mixes RSAttn and ScaleAttn per head by alpha, and MPCViT+'s
per-token beta (GeLU or linear, ReLU after the second linear layer).
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.dirname(os.path.abspath(__file__))


class Attention(nn.Module):
    def __init__(self, dim, heads, alpha):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.tensor(alpha, dtype=torch.float32).view(1, heads, 1, 1))

    def forward(self, x):
        b, n, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * hd ** -0.5
        scaled = scores / n
        r = F.relu(scores)
        r = r / (r.sum(dim=-1, keepdim=True) + 1e-5)
        attn = self.alpha * r + (1 - self.alpha) * scaled
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Layer(nn.Module):
    def __init__(self, dim, heads, mlp, alpha, beta):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, alpha)
        self.linear1 = nn.Linear(dim, mlp)
        self.norm1 = nn.LayerNorm(dim)
        self.linear2 = nn.Linear(mlp, dim)
        self.plus = beta is not None
        if self.plus:
            self.beta = nn.Parameter(torch.tensor(beta, dtype=torch.float32).view(1, -1, 1), requires_grad=False)

    def forward(self, x):
        x = self.norm1(x + self.self_attn(self.pre_norm(x)))
        h = self.linear1(x)
        if self.plus:
            h = self.beta * F.gelu(h) + (1 - self.beta) * h
            y = self.linear2(h)
            y = (1 - self.beta) * F.relu(y) + self.beta * y
        else:
            y = self.linear2(F.gelu(h))
        return x + y


class Tokenizer(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Sequential(nn.Conv2d(channels, dim, patch, stride=patch, bias=True), nn.Identity(), nn.Identity())
        )

    def forward(self, x):
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class Classifier(nn.Module):
    def __init__(self, tokens, dim, heads, mlp, classes, alphas, betas):
        super().__init__()
        self.class_emb = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.positional_emb = nn.Parameter(torch.randn(1, tokens, dim) * 0.5)
        self.blocks = nn.ModuleList(
            Layer(dim, heads, mlp, a, b) for a, b in zip(alphas, betas)
        )
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        x = torch.cat((self.class_emb.expand(x.shape[0], -1, -1), x), dim=1) + self.positional_emb
        for blk in self.blocks:
            x = blk(x)
        return self.fc(self.norm(x)[:, 0])


class ViT(nn.Module):
    def __init__(self, image, channels, patch, dim, heads, mlp, classes, alphas, betas):
        super().__init__()
        self.tokenizer = Tokenizer(channels, dim, patch)
        self.classifier = Classifier((image // patch) ** 2 + 1, dim, heads, mlp, classes, alphas, betas)

    def forward(self, x):
        return self.classifier(self.tokenizer(x))


def make(name, plus, seed):
    torch.manual_seed(seed)
    image, channels, patch, dim, heads, mlp, classes = 8, 3, 4, 8, 2, 16, 10
    tokens = (image // patch) ** 2 + 1
    alphas = [[1.0, 0.0], [0.0, 1.0]]
    betas = [[1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]] if plus else [None, None]
    m = ViT(image, channels, patch, dim, heads, mlp, classes, alphas, betas).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2 and p.shape[-1] > 1:
                p.mul_(3.0)  # larger weights than the default init: logits far from 0
        for blk in m.classifier.blocks:
            blk.pre_norm.weight.uniform_(0.5, 1.5)
            blk.pre_norm.bias.uniform_(-0.3, 0.3)
            blk.norm1.weight.uniform_(0.5, 1.5)
            blk.norm1.bias.uniform_(-0.3, 0.3)
    images = torch.randn(3, channels, image, image)
    with torch.no_grad():
        logits = m(images)
    torch.save({"state_dict": m.state_dict(), "epoch": 3, "best_acc": 0.5}, os.path.join(OUT, name + ".pth.tar"))
    with open(os.path.join(OUT, name + ".logits.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "images": images.flatten(1).tolist(),
                "logits": logits.tolist(),
            },
            f,
        )
    print(name, logits.argmax(1).tolist())


make("tiny-mpcvit", plus=False, seed=1)
make("tiny-mpcvit-plus", plus=True, seed=2)
