"""The book's figures: small helpers that take arrays and return matplotlib axes.

A flat module of small functions, one per kind of picture. Each takes an optional `ax`
(it draws on a new figure otherwise) and returns the axes it drew on, so chapters can
combine them in grids. Nothing here trains or loads anything; chapters compute, this
module draws. Introduced in Chapter 1 (notebooks/01_data) and used throughout the book.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def _ax(ax=None, figsize=None):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def label_counts(labels, ax=None, title: str | None = None, order=None, color=None):
    """Bar chart of how often each label occurs (classification tasks). Chapter 1."""
    import seaborn as sns

    ax = _ax(ax)
    sns.countplot(x=list(labels), order=order, ax=ax, color=color)
    ax.set_xlabel("label")
    ax.set_ylabel("examples")
    if title:
        ax.set_title(title)
    return ax


def histogram(values, ax=None, title: str | None = None, xlabel: str = "", bins=30,
              color=None, vlines=(), label=None, ylabel: str = "examples"):
    """Histogram of numbers (sentence lengths, STS scores), with optional vertical marks
    such as a `max_length` cut-off. Chapter 1."""
    import seaborn as sns

    ax = _ax(ax)
    sns.histplot(_numpy(values), bins=bins, ax=ax, color=color, label=label)
    for x in vlines:
        ax.axvline(x, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def attention_heatmap(probs, tokens, ax=None, title: str | None = None, cbar: bool = False,
                      labels: bool = True):
    """One head's attention probabilities (T, T): row i is where query token i looks.
    Chapter 2."""
    import seaborn as sns

    ax = _ax(ax, figsize=(5, 4.5))
    probs = _numpy(probs)
    sns.heatmap(probs, ax=ax, cmap="viridis", vmin=0.0, vmax=1.0, square=True, cbar=cbar,
                xticklabels=tokens if labels else False, yticklabels=tokens if labels else False)
    if labels:
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
        ax.tick_params(axis="x", labelrotation=90, labelsize=8)
        ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def attention_grid(attentions, tokens, heads, ncols: int = 3, size: float = 3.0):
    """A grid of heads: `attentions` is a list over layers of (heads, T, T) (or (1, heads, T, T))
    tensors, `heads` a list of (layer, head) pairs. Returns the figure. Chapter 2."""
    nrows = -(-len(heads) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax, (layer, head) in zip(axes.flat, heads):
        a = attentions[layer]
        a = a[0] if a.dim() == 4 else a
        attention_heatmap(a[head], tokens, ax=ax, title=f"layer {layer}, head {head}", labels=False)
        ax.set_xticks(np.arange(len(tokens)) + 0.5, tokens, rotation=90, fontsize=6)
        ax.set_yticks(np.arange(len(tokens)) + 0.5, tokens, rotation=0, fontsize=6)
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def pca_2d(x) -> np.ndarray:
    """Project rows of x (N, D) onto their first two principal components, via the SVD of
    the centred matrix. Returns (N, 2). Chapter 3."""
    x = _numpy(x).astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:2].T
    # Fix the sign of each axis (an SVD's signs are arbitrary) so figures are reproducible.
    signs = np.sign(z[np.abs(z).argmax(axis=0), [0, 1]])
    return z * signs


def scatter_2d(points, labels, ax=None, title: str | None = None, palette="coolwarm",
               legend_title: str = "label", s: float = 14):
    """Scatter plot of (N, 2) points coloured by a discrete label. Chapter 3."""
    import seaborn as sns

    ax = _ax(ax, figsize=(5, 4.5))
    p = _numpy(points)
    sns.scatterplot(x=p[:, 0], y=p[:, 1], hue=list(labels), palette=palette, s=s,
                    linewidth=0, alpha=0.8, ax=ax, legend="full")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(title=legend_title, fontsize=8, title_fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def contour_paths(f, paths: dict, xlim, ylim, ax=None, title: str | None = None, levels=30,
                  optimum=None, log_levels: bool = True):
    """Contours of a 2-D function `f(X, Y)` (numpy, vectorised) with optimizer paths drawn on
    top; `paths` maps a name to an (N, 2) array of iterates. Chapter 4."""
    ax = _ax(ax, figsize=(6, 5))
    xs = np.linspace(*xlim, 300)
    ys = np.linspace(*ylim, 300)
    X, Y = np.meshgrid(xs, ys)
    Z = f(X, Y)
    if log_levels:
        lo = max(Z.min(), 1e-3)
        lv = np.geomspace(lo, Z.max(), levels)
        ax.contour(X, Y, Z, levels=lv, colors="0.6", linewidths=0.6)
    else:
        ax.contour(X, Y, Z, levels=levels, colors="0.6", linewidths=0.6)
    for name, path in paths.items():
        p = _numpy(path)
        ax.plot(p[:, 0], p[:, 1], marker="o", markersize=2, linewidth=1.2, label=name)
    if optimum is not None:
        ax.plot(*optimum, marker="*", color="black", markersize=12, linestyle="none", label="minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def curves(series: dict, ax=None, title: str | None = None, xlabel: str = "step",
           ylabel: str = "", logy: bool = False):
    """Line plot of several named 1-D series (losses, step sizes) against their index."""
    ax = _ax(ax)
    for name, ys in series.items():
        ax.plot(np.arange(1, len(ys) + 1), _numpy(ys), label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
