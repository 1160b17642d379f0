"""A compact, fast LSTM sentiment classifier for movie reviews, trained and served on CPUs."""

from sentiment.classifier import SentimentClassifier
from sentiment.cpu import configure_cpu
from sentiment.data import SentimentDataModule
from sentiment.errors import DataError
from sentiment.model import SentimentNet
from sentiment.text import TextEncoder, Vocab, tokenize, truncate

__all__ = ["DataError", "SentimentClassifier", "SentimentDataModule", "SentimentNet", "TextEncoder", "Vocab",
           "configure_cpu", "tokenize", "truncate"]
