"""The network room: plain PyTorch, no Lightning, reusable in any training loop.

    model.py          NetConfig and SentimentNet (embedding -> LSTM/GRU -> pooling -> logits, beside a bag of n-grams)
    gate_tables.py    the same network's float32 inference through per-word gate tables
"""
