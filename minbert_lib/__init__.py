"""minbert_lib: the library behind the minBERT book.

minBERT (model, attention), its tokenizer and checkpoint loader, AdamW, the CS 224N task
data, and the fine-tuning machinery the chapters build: single-task training, SMART
(adversarial regularizer, Bregman proximal point), multitask schedules and the relational
layer. Each module names the chapter that introduces it.
"""
__version__ = "0.2.0"
