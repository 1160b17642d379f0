"""The data room: raw text -> labelled, split, encoded reviews -> batches. Plain numpy and torch, but for the
Lightning adapter (``datamodule``); nothing here imports the network, training or inference.

    sources.py        where reviews come from: IMDb's archive (downloaded when absent), CSV/TSV/JSONL/TXT files
    labels.py         label sets: which classes a training file has, their order, each review's class
    text.py           the tokenizer, truncation, Vocab, TextEncoder, parallel corpus encoding
    bag.py            the bag of n-grams over the whole review: hashing, the n-gram table, log-count ratios
    vectors.py        word vectors learnt from raw reviews, to start a model's embedding
    pseudo_labels.py  unlabelled reviews a labeller is sure of, with its labels
    settings.py       the data module's settings objects (Encoding: how a text becomes model input)
    corpus.py         Corpus: sources -> labels -> split -> vocabulary and bag -> cache
    batches.py        encoded reviews as padded batches, the seeded order of an epoch, resumable loaders
    datamodule.py     SentimentDataModule: the Lightning adapter over a Corpus
"""
