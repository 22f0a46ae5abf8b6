"""A bounded run of the model fuzzer (tests/fuzz_models.py; run it by hand with --cases 5000 for a longer one)."""

import warnings

from fuzz_models import run_cases


def test_malformed_and_hostile_models_get_a_clear_error_every_time(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run_cases(cases=150, seed=0, timeout=20.0, folder=tmp_path)
    assert outcome.failures == []
    # the cases reach every stage: refusals, quantized models, exports and the ops on other input shapes
    assert outcome.exit_codes["quantize exit 1"] > 50 and outcome.exit_codes["quantize exit 0"] > 10
    assert outcome.exit_codes["export exit 0"] == outcome.exit_codes["quantize exit 0"]
    assert outcome.op_runs["ran"] > 0 and outcome.op_runs["refused by onnxruntime"] > 0
