"""minbert_lib: the library behind the minBERT book.

minBERT (model, attention), its tokenizer and checkpoint loader, AdamW, the CS 224N task
data, and the fine-tuning machinery the chapters build: single-task training, SMART
(adversarial regularizer, Bregman proximal point), multitask schedules and the relational
layer. Each module names the chapter that introduces it.
"""
# The one setting to change when the book is published: where the Colab cells install from
# (minbert_lib.colab). _config.yml's repository url must match (tests/test_colab.py).
REPOSITORY = "https://github.com/minbert-book/minbert-book"
__version__ = "0.3.0"
