"""The training room: the LightningModule and what trains with it.

    classifier.py     SentimentClassifier: loss, metrics, logging, optimizer around a SentimentNet
    calibration.py    the expected calibration error and the temperature that lowers it
    schedules.py      the one-cycle learning-rate schedule, for the plan of the run it is in
    callbacks.py      AutoSave, atomic checkpoint files, the CSV prediction writer
    selftrain.py      self_train(): a recipe's teacher, fitted once and cached, and the student's data
"""
