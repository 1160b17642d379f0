"""A compact, fast LSTM sentiment classifier for movie reviews, trained and served on CPUs."""

from sentiment.data import SentimentDataModule
from sentiment.errors import DataError
from sentiment.text import TextEncoder, Vocab, tokenize, truncate

__all__ = ["DataError", "SentimentDataModule", "TextEncoder", "Vocab", "tokenize", "truncate"]
