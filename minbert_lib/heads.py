"""Task heads over minBERT, and the container that holds one BERT and every head.

The CS 224N 2023 default project puts small heads on the pooled [CLS] vector
u = pooler(h_[CLS]) = tanh(W_p h_[CLS] + b_p) (Devlin et al. 2019):

    sentiment (SST, 5 classes; CFIMDB, 2):  logits = W_s Dropout(u) + b_s,   loss = cross-entropy
    paraphrase (Quora, one logit):          z = w_q . Dropout([u, v, |u - v|]) + b_q,   loss = BCE with logits
    similarity (STS, a score):              s = c cos(u, v),   loss = MSE against c·label/5

c = `sts_scale`: 1 trains on label/5 as the poster's code (`mse_loss(cos(u, v), label / 5)`);
5 puts scores on the labels' 0-5 scale (25 times that loss). Pearson does not depend on c;
the CS 224N prediction files get 5/c times the score.

Pair tasks encode each sentence separately (the course's bi-encoder): u and v come from
two passes of the same BERT. The sentiment head is introduced in Chapter 5
(notebooks/05_single_task); the pair heads and the relational layer in Chapter 8
(notebooks/08_multitask).

The container's API (shared with the SMART and multitask code):

- `embed(task, batch) -> (embeddings, masks)`: one (B, T, H) tensor and one (B, T) mask per
  sentence, the output of BERT's embedding layer (what SMART perturbs);
- `forward_from_embeddings(task, embeddings, masks)`: the encoder, pooler and the task's head;
  categorical tasks give (B, C) logits, bernoulli (B,) logits, regression (B,) scores 0-5;
- `forward(task, batch)` = both.

Adding a head is additive: a new entry in TASK_KIND, a module created in `__init__`, and a
branch in `predict` keyed by the task.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import BertModel

# What kind of output each task's head gives; the loss and the SMART divergence follow it.
TASK_KIND = {"sst": "categorical", "cfimdb": "categorical", "quora": "bernoulli", "sts": "regression"}
# Metric reported on dev for each task (the CS 224N names).
TASK_METRIC = {"sst": "sst_acc", "cfimdb": "cfimdb_acc", "quora": "quora_acc", "sts": "sts_pearson"}
NUM_CLASSES = {"sst": 5, "cfimdb": 2}
PAIR_TASKS = ("quora", "sts")
# How a sentence becomes one vector: BERT's pooler on [CLS] (the course's choice), or the
# mean of the last hidden states over real tokens (how all-MiniLM-L6-v2 was trained;
# Reimers & Gurevych 2019). Chapter 8 compares them.
POOLINGS = ("cls", "mean")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, H) hidden states over the positions where mask (B, T) is 1 -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class MultitaskBert(nn.Module):
    """One BERT shared by every task, with a head per task.

    `num_sentiment_classes`: 5 for SST, 2 for CFIMDB (a single-task CFIMDB model uses the
    sentiment head with 2 classes). `freeze_bert=True` is the poster's "pretrain" setting:
    BERT's weights get requires_grad=False and only the heads learn.
    """

    def __init__(self, bert: BertModel, dropout: float = 0.3, num_sentiment_classes: int = 5,
                 relational: bool = False, freeze_bert: bool = False, pooling: str = "cls",
                 sts_scale: float = 5.0):
        super().__init__()
        self.sts_scale = float(sts_scale)  # STS scores and targets are sts_scale·label/5
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.bert = bert
        self.freeze_bert = freeze_bert
        self.relational = relational
        self.num_sentiment_classes = num_sentiment_classes
        H = bert.config.hidden_size
        for p in self.bert.parameters():
            p.requires_grad = not freeze_bert
        self.dropout = nn.Dropout(dropout)
        # Sentiment (SST or CFIMDB): a linear layer on the pooled [CLS] vector.
        self.sentiment = nn.Linear(H, num_sentiment_classes)
        # Paraphrase (Quora), the simple bi-encoder head: [u, v, |u - v|] -> one logit.
        self.paraphrase = nn.Linear(3 * H, 1)
        # Similarity (STS) needs no weights in the simple head: sts_scale * cos(u, v).
        if relational:
            self._build_relational(H, dropout)

    def _build_relational(self, H: int, dropout: float) -> None:
        """The rich relational layer shared by the pair tasks (Chapter 8, ALGORITHMS.md):
        φ(u, v) = [u, v, |u − v|, (u ⊙ v)/(‖u‖‖v‖ + ε)] → Dropout → Linear(4H → H) → LeakyReLU,
        then Linear(H → 1) for the Quora logit and Linear(H → 1) → sigmoid → ×sts_scale for STS."""
        self.relation = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * H, H), nn.LeakyReLU())
        self.paraphrase_rel = nn.Linear(H, 1)
        self.similarity_rel = nn.Linear(H, 1)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def task_kind(task: str) -> str:
        if task not in TASK_KIND:
            raise ValueError(f"Unknown task {task!r}; choose from {sorted(TASK_KIND)}")
        return TASK_KIND[task]

    def pooled(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) embedding-layer output -> (B, H) sentence vector: the pooled [CLS]
        vector (pooling="cls") or the mean of the last hidden states over real tokens ("mean")."""
        out = self.bert.encode(embeddings, mask)
        if getattr(self, "pooling", "cls") == "mean":
            return mean_pool(out["last_hidden_state"], mask)
        return out["pooler_output"]

    # -- the API ----------------------------------------------------------------------------
    def embed(self, task: str, batch: dict) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """One (B, T, H) embedding tensor and one (B, T) mask per sentence of the task."""
        self.task_kind(task)
        embeddings = [self.bert.embed(batch["input_ids"])]
        masks = [batch["attention_mask"]]
        if task in PAIR_TASKS:
            embeddings.append(self.bert.embed(batch["input_ids2"]))
            masks.append(batch["attention_mask2"])
        return tuple(embeddings), tuple(masks)

    def forward_from_embeddings(self, task: str, embeddings, masks) -> torch.Tensor:
        pooled = [self.pooled(e, m) for e, m in zip(embeddings, masks)]  # each (B, H)
        return self.predict(task, *pooled)

    def predict(self, task: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """The task head on pooled vectors u (and v for pair tasks)."""
        kind = self.task_kind(task)
        if kind == "categorical":
            return self.sentiment(self.dropout(u))  # (B, C)
        if v is None:
            raise ValueError(f"Task {task!r} is a sentence-pair task: predict() needs u and v")
        if self.relational:
            return self.predict_relational(task, u, v)
        if task == "quora":
            features = torch.cat([u, v, (u - v).abs()], dim=-1)  # (B, 3H)
            return self.paraphrase(self.dropout(features)).squeeze(-1)  # (B,)
        if task == "sts":
            return self.sts_scale * F.cosine_similarity(u, v, dim=-1)  # (B,), in [-c, c]
        raise ValueError(f"No head for task {task!r}")

    @staticmethod
    def relational_features(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """φ(u, v) = [u, v, |u − v|, (u ⊙ v)/(‖u‖‖v‖ + ε)], (B, 4H); the last block sums to cos(u, v)."""
        scale = u.norm(dim=-1, keepdim=True) * v.norm(dim=-1, keepdim=True) + eps  # (B, 1)
        return torch.cat([u, v, (u - v).abs(), u * v / scale], dim=-1)

    def predict_relational(self, task: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Pair heads through the shared relational layer: Quora one logit (B,), STS a score
        in (0, c) (B,) = c·sigmoid(w·r + b), c = sts_scale, trained with MSE against c·label/5."""
        r = self.relation(self.relational_features(u, v))  # (B, H)
        if task == "quora":
            return self.paraphrase_rel(r).squeeze(-1)
        if task == "sts":
            return self.sts_scale * torch.sigmoid(self.similarity_rel(r).squeeze(-1))
        raise ValueError(f"No relational head for task {task!r}")

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        embeddings, masks = self.embed(task, batch)
        return self.forward_from_embeddings(task, embeddings, masks)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]
