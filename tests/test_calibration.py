"""Calibration: the expected calibration error and the temperature that lowers it."""

import pytest
import torch

from sentiment.training.calibration import calibrate, expected_calibration_error, fit_temperature


def test_the_calibration_error_is_the_gap_between_confidence_and_accuracy_per_bin():
    # four answers at 0.9 confidence, three right: a gap of 0.15 on all of them; two at 0.6, both right: 0.4
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    assert expected_calibration_error(torch.tensor([[0.25, 0.75]] * 4), torch.tensor([1, 1, 1, 0])) == pytest.approx(0)


@pytest.mark.parametrize("classes", [2, 5])
def test_the_fitted_temperature_undoes_an_over_confident_scale(classes):
    # labels drawn from the true probabilities; the model's logits are the true ones times 3 (over-confident)
    g = torch.Generator().manual_seed(0)
    true = torch.randn(20_000, classes, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(true, 1), 1, generator=g).squeeze(1)
    logits = 3 * (true if classes > 2 else true[:, 1] - true[:, 0])  # a binary model gives one logit
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.05)
    temperature, before, after = calibrate(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05) and after < before / 3


def test_a_temperature_is_kept_only_where_it_lowers_the_error():
    g = torch.Generator().manual_seed(1)
    true = torch.randn(5_000, 3, generator=g)
    labels = torch.multinomial(torch.softmax(true, 1), 1, generator=g).squeeze(1)
    assert calibrate(true, labels)[0] == pytest.approx(1.0, rel=0.1)  # calibrated already: about 1 either way
    temperature, before, after = calibrate(true, true.argmax(1))  # every answer right: nothing to fit against
    assert temperature == 1.0 and after == before > 0
