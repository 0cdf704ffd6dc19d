"""The option checks: one ClumptoolError listing every problem, each naming its CLI option."""

from __future__ import annotations

import dataclasses

import pytest

from clumptool.active_learning.options import SelectOptions
from clumptool.aggregation.pipeline import AggregateOptions
from clumptool.common.errors import ClumptoolError
from clumptool.common.options import (
    at_least,
    in_range,
    one_of,
    options_from,
    positive,
    raise_problems,
    whole_number,
)
from clumptool.detection.options import EvaluateOptions, MatchSettings, PredictOptions, TrainOptions
from clumptool.simulation.config import SimulationConfig


def test_checks_name_the_option_and_what_it_takes():
    assert whole_number("--batch-size", 0, 1) == "--batch-size 0: must be a whole number >= 1"
    assert whole_number("--batch-size", 2.5, 1) == "--batch-size 2.5: must be a whole number >= 1"
    assert whole_number("--batch-size", True, 0) is not None  # a flag is not a count
    assert whole_number("--stages", 5, 0, 4) == "--stages 5: must be a whole number from 0 to 4"
    assert positive("--lr", float("nan")) == "--lr nan: must be a positive number"
    assert in_range("--iou", 0.0, 0, 1, lo_open=True, note="IoU") == "--iou 0.0: must be in (0, 1] (IoU)"
    assert at_least("--drop-central", -1, 0) == "--drop-central -1: must be a number >= 0"
    assert one_of("--format", "xls", ("parquet", "csv")) == "--format 'xls': use one of parquet, csv"
    assert whole_number("--n", 3, 1) is None and positive("--lr", 3e-4) is None


def test_raise_problems_lists_every_problem_at_once():
    raise_problems([None, None])
    with pytest.raises(ClumptoolError) as err:
        raise_problems(["--a 1: bad", None, "--b 2: bad"])
    assert str(err.value) == "--a 1: bad; --b 2: bad"


@pytest.mark.parametrize("cls", [AggregateOptions, EvaluateOptions, MatchSettings, PredictOptions, SelectOptions,
                                 SimulationConfig, TrainOptions])
def test_defaults_pass_their_own_checks(cls):
    cls()


@pytest.mark.parametrize("cls, bad, needles", [
    (TrainOptions, {"epochs": 0, "batch_size": 0, "precision": "64"},
     ["--epochs 0", "--batch-size 0", "--precision '64'"]),
    (PredictOptions, {"batch_size": 0, "num_workers": -1, "nms_iou": 2.0},
     ["--batch-size 0", "--num-workers -1", "--nms-iou 2.0"]),
    (EvaluateOptions, {"batch_size": 0, "min_score": -0.1}, ["--batch-size 0", "--min-score -0.1"]),
    (SelectOptions, {"batch_size": 0, "n": 0, "strategy": "x"}, ["--batch-size 0", "--n 0", "--strategy 'x'"]),
    (AggregateOptions, {"eps": -1, "box_scale": 0}, ["--eps -1", "--box-scale 0"]),
])
def test_every_bad_option_is_in_one_error(cls, bad, needles):
    with pytest.raises(ClumptoolError) as err:
        cls(**bad)
    for needle in needles:
        assert needle in str(err.value)


def test_options_from_keywords_or_an_object():
    assert options_from(TrainOptions, None, {"epochs": 2}).epochs == 2
    base = TrainOptions(epochs=3)
    assert options_from(TrainOptions, base, {}) is base
    assert options_from(TrainOptions, base, {"batch_size": 2}) == dataclasses.replace(base, batch_size=2)
    with pytest.raises(ClumptoolError, match="--batch-size 0"):
        options_from(TrainOptions, base, {"batch_size": 0})
