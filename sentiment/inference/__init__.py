"""The inference room: a trained model from its checkpoint to answers, without Lightning.

    checkpoint.py     the one reader and writer of checkpoints; the network, encoder and settings from one
    predictor.py      Predictor: raw text -> answers, for the API, `sentiment predict`, the server and the export
    serve.py, page.html   `sentiment serve`: the HTTP API (LitServe) and the page
    export.py         `sentiment export`: the model as ONNX
"""
