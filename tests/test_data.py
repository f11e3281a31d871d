"""Evaluation sets streamed in batches: a directory of .npz shards and TFRecord files give the
statistics the in-memory run gives on the same arrays; rows of many lengths are bucketed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT

import rnnexport
from rnnexport.cli import cli
from rnnexport.data import batches, bucket_length
from rnnexport.errors import UserError
from rnnexport.model import TensorInfo
from rnnexport.options import SweepOptions, ValidateOptions

ROWS, LENGTH, FEATURES = 40, 12, 3


def _example(x: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = tf.train.Feature(float_list=tf.train.FloatList(value=x.ravel().tolist()))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


def _tfrecord(path, rows) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            writer.write(_example(row))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A GRU tagger with 4 classes per step, its ONNX export, 40 sequences as one .npz, the same
    rows as three .npz shards of 15, 15 and 10 rows, and as two TFRecord files."""
    import keras

    work = tmp_path_factory.mktemp("data")
    keras.utils.set_random_seed(7)
    i = keras.Input((None, FEATURES), name="x")
    x = keras.layers.GRU(8, return_sequences=True, name="gru")(i)
    keras.Model(i, keras.layers.Dense(4, activation="softmax", name="tags")(x)).save(work / "tagger.keras")
    rnnexport.convert(work / "tagger.keras", work, rnnexport.ConvertOptions(targets=("onnx",), validate=False))
    x = np.random.default_rng(3).standard_normal((ROWS, LENGTH, FEATURES)).astype(np.float32)
    np.savez(work / "all.npz", x=x)
    (work / "shards").mkdir()
    for n, (start, end) in enumerate(((0, 15), (15, 30), (30, 40))):
        np.savez(work / "shards" / f"part-{n}.npz", x=x[start:end])
    (work / "records").mkdir()
    _tfrecord(work / "records" / "a.tfrecord", x[:25])
    _tfrecord(work / "records" / "b.tfrecord", x[25:])
    return work


def _validate(work, data, **sweep):
    options = ValidateOptions(device="cpu", sweep=SweepOptions(data=work / data, **sweep))
    report = rnnexport.validate(work / "tagger.keras", [work / "tagger.onnx"], options)
    (export,) = report.exports
    return export


@pytest.fixture(scope="module")
def in_memory(classifier):
    return _validate(classifier, "all.npz")


def _numbers(export):
    (case,) = [c for c in export.cases if c.case.kind == "data"]
    (tags,) = case.outputs
    return (case.case.batch, tags.reference_shape, tags.passed, tags.max_abs, tags.max_rel, tags.needed_atol,
            tags.nonfinite_export, tags.first_bad_step)


def _same_statistics(streamed, in_memory, batches_expected):
    _same_statistics_dicts(streamed.details["data"], in_memory.details["data"], batches_expected)


def _same_statistics_dicts(data, whole, batches_expected):
    assert (data["rows"], data["batches"]) == (ROWS, batches_expected)
    assert (whole["rows"], whole["batches"]) == (ROWS, 1)
    stats, expected = dict(data["outputs"]["tags"]), dict(whole["outputs"]["tags"])
    # Summing 3840 errors in another order moves the mean in its last bits; every other figure is exact.
    assert stats.pop("mean_abs") == pytest.approx(expected.pop("mean_abs"), rel=1e-12, abs=0)
    assert stats == expected
    assert expected["elements"] == ROWS * LENGTH * 4
    assert 0 < expected["max_abs"] < 1e-5 and 0 < expected["p50_abs"] <= expected["p99_abs"] <= 1e-5
    assert expected["within_tolerance"] == 1.0 and expected["top1_agreement"] == 1.0


def test_npz_shards_give_the_in_memory_statistics(classifier, in_memory):
    streamed = _validate(classifier, "shards", data_batch=8)
    assert streamed.passed and in_memory.passed
    assert _numbers(streamed) == _numbers(in_memory)
    assert _numbers(streamed)[:2] == (ROWS, (ROWS, LENGTH, 4))
    _same_statistics(streamed, in_memory, batches_expected=5)


def test_tfrecord_without_a_feature_spec_is_refused_naming_the_file(classifier):
    with pytest.raises(UserError, match=r"a\.tfrecord: TFRecord data needs the feature spec"):
        _validate(classifier, "records")


def test_rows_of_many_lengths_are_bucketed_with_little_padding(tmp_path):
    lengths = [3, 40, 17, 3, 41, 18, 100, 39, 3, 17]
    rows = [np.full((n, 2), n, dtype=np.float32) for n in lengths]
    _tfrecord(tmp_path / "varied.tfrecord", rows)
    spec = [TensorInfo("x", "float32", (None, None, 2), mask_value=0.0)]
    options = SweepOptions(data_batch=2, features=(("x", "float32", (-1, 2)),))
    found = list(batches(tmp_path / "varied.tfrecord", spec, options))
    assert sum(c.batch for c in found) == len(lengths)
    for case in found:
        x = case.inputs["x"]
        assert x.shape[1] == case.length and case.batch <= 2
        true = x[:, :, 0].max(axis=1).astype(int)  # every row holds its length, then padding zeros
        assert all(bucket_length(n) == case.length for n in true)
        assert all((x[r, n:] == 0).all() and (x[r, :n] == n).all() for r, n in enumerate(true))
    assert sorted(int(n) for c in found for n in c.inputs["x"][:, :, 0].max(axis=1)) == sorted(lengths)
    assert {c.length for c in found} == {3, 18, 40, 44, 104}


@pytest.fixture(scope="module")
def readme_run(classifier):
    """The README's evaluation-set command on its config: the TFRecord files, 16 rows a batch."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Evaluation sets bigger than memory"):].split("\n## ", 1)[0]
    (classifier / "eval.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    command = section.split("```sh\n", 1)[1].split("```", 1)[0].split()
    old = os.getcwd()
    os.chdir(classifier)
    try:
        result = CliRunner().invoke(cli, command[1:])
    finally:
        os.chdir(old)
    return result, json.loads((classifier / "eval.json").read_text())


def test_the_readme_evaluation_set_command(readme_run):
    result, report = readme_run
    assert result.exit_code == 0, result.output
    assert "data 40 rows in 3 batch(es), 'tags': mean abs err" in result.output
    assert report["exports"][0]["cases"][0]["name"] == "data records"


def test_tfrecord_files_give_the_in_memory_statistics(readme_run, in_memory):
    (export,) = readme_run[1]["exports"]
    (tags,) = export["cases"][0]["outputs"]
    (expected,) = [c for c in in_memory.cases if c.case.kind == "data"][0].outputs
    expected = expected.to_dict()
    # A set streamed in batches keeps its error's mean and percentiles in details.data (checked below).
    for key in ("mean_abs", "median_abs", "p99_abs"):
        assert tags.pop(key) is None and expected.pop(key) > 0
    assert tags == expected
    _same_statistics_dicts(export["details"]["data"], in_memory.details["data"], batches_expected=3)
