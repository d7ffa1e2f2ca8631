"""Fuzz-style properties (hypothesis) of the retrieval and NLVR2 metrics and the NLVR2 loader's field parsers:
any input either gives a well-formed result or a one-line vlbench error, never another exception."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.data.nlvr2 import parse_identifier, parse_label
from harness.errors import VlbenchError
from harness.metrics.nlvr2 import nlvr2_scores
from harness.metrics.retrieval import retrieval_recall


@st.composite
def retrieval_inputs(draw):
    counts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=8))
    scores = draw(arrays(np.float32, (len(counts), sum(counts)),
                         elements=st.floats(-1e3, 1e3, allow_nan=False, width=32)))
    return scores, counts


@settings(max_examples=200, deadline=None)
@given(retrieval_inputs())
def test_recall_is_a_bounded_monotone_percentage(data) -> None:
    scores, counts = data
    out = retrieval_recall(scores, counts)
    for side in ("tr", "ir"):
        values = [out[f"{side}_r{k}"] for k in (1, 5, 10)]
        assert all(0.0 <= v <= 100.0 for v in values) and values == sorted(values)
    assert abs(out["rsum"] - sum(v for k, v in out.items() if k != "rsum")) < 1e-6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=8))
def test_recall_of_a_perfect_scorer_is_100(counts) -> None:
    owner = np.repeat(np.arange(len(counts)), counts)
    scores = (owner[None, :] == np.arange(len(counts))[:, None]).astype(np.float32)
    out = retrieval_recall(scores, counts)
    assert out["tr_r1"] == 100.0 and out["ir_r1"] == 100.0


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 4), st.integers(0, 6)),
              elements=st.floats(allow_nan=True, allow_infinity=True)), st.lists(st.integers(-1, 4), max_size=5))
def test_recall_refuses_bad_shapes_and_values_with_a_vlbench_error(scores, counts) -> None:
    try:
        out = retrieval_recall(scores, counts)
    except VlbenchError:
        return
    assert 0.0 <= out["tr_r1"] <= 100.0


identifiers = st.builds(lambda s, p, n: f"dev-{s}-{p}-{n}", st.integers(0, 20), st.integers(0, 3), st.integers(0, 1))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(identifiers, st.sampled_from(["True", "False"]), min_size=1, max_size=30), st.data())
def test_nlvr2_scores_bounds_and_perfect_predictions(labels, data) -> None:
    perfect = nlvr2_scores(dict(labels), labels)
    assert perfect == {"accuracy": 100.0, "consistency": 100.0}
    guesses = {k: data.draw(st.sampled_from(["True", "False"])) for k in labels}
    out = nlvr2_scores(guesses, labels)
    assert 0.0 <= out["consistency"] <= 100.0 and 0.0 <= out["accuracy"] <= 100.0
    if out["accuracy"] < 100.0:
        assert out["consistency"] < 100.0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.booleans()))
def test_nlvr2_field_parsers_accept_or_raise_a_vlbench_error(value) -> None:
    for parse in (parse_identifier, parse_label):
        try:
            parse(value)
        except VlbenchError:
            pass
