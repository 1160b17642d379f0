import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and x86 denormal flags")
def test_configure_cpu_keeps_freed_memory_and_flushes_denormals():
    # a fresh interpreter: the settings are process-wide
    code = ("import torch; from sentiment.cpu import configure_cpu; print(configure_cpu());"
            "print((torch.tensor([1e-39]) * 1.0).item())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "{'keep_freed_memory': True, 'flush_denormal': True}"
    assert float(out[1]) == 0.0  # a denormal float32 reads as zero


@pytest.mark.parametrize("native, asked, expected", [
    (False, "bf16-mixed", "32-true"), (False, "bf16-true", "32-true"), (False, "32-true", "32-true"),
    (True, "bf16-mixed", "bf16-mixed"), (True, "32-true", "32-true")])
def test_bfloat16_falls_back_to_float32_where_the_cpu_lacks_it(monkeypatch, caplog, native, asked, expected):
    from sentiment import cpu

    monkeypatch.setattr(cpu, "native_bfloat16", lambda: native)
    assert cpu.usable_precision(asked) == expected
    warned = [r.getMessage() for r in caplog.records]
    if asked != expected:
        assert warned == [f"warning: --trainer.precision {asked}: this CPU has no native bfloat16 (AVX512-BF16 or "
                          "AMX), and PyTorch's LSTM has no bfloat16 kernel without it; computing in float32 (32-true)"]
    else:
        assert warned == []


@pytest.mark.slow
def test_bf16_mixed_asked_for_on_an_avx2_only_cpu_trains_and_predicts_in_float32(tmp_path, tiny_csv):
    # PyTorch limited to AVX2 has no bfloat16 LSTM: without the fallback, fit and predict end in a oneDNN error
    from conftest import AVX2_ONLY

    env = {**os.environ, **AVX2_ONLY}
    common = ["--trainer.precision", "bf16-mixed", "--trainer.enable_progress_bar", "false"]
    fit = subprocess.run(
        ["sentiment", "fit", "--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
         "--data.loader.min_epoch_size", "0", "--data.encoding.min_freq", "1", "--model.net.hidden_dim", "8",
         "--model.net.embed_dim", "8",
         "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *common],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "warning: --trainer.precision bf16-mixed: this CPU has no native bfloat16" in fit.stderr
    run = tmp_path / "lightning_logs" / "version_0"
    assert "precision: 32-true" in (run / "config.yaml").read_text()  # what ran, to run again anywhere
    (tmp_path / "reviews.txt").write_text("brilliant superb fun\nawful dull waste\n")
    predict = subprocess.run(
        ["sentiment", "predict", "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
         "--data.predict_file", "reviews.txt", "--prediction_writer.output_path", "out.csv", *common],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 3
    code = ("from sentiment.inference.predictor import Predictor; import sys; "
            "p = Predictor.from_checkpoint(sys.argv[1], compute='bfloat16'); "
            "print(p.compute, len(p.predict(['fun', 'dull'])))")
    api = subprocess.run([sys.executable, "-c", code, str(run / "checkpoints" / "best.ckpt")], capture_output=True,
                         text=True, env=env)
    assert api.returncode == 0, api.stderr[-3000:]
    assert api.stdout.split() == ["float32", "2"]
    assert api.stderr.strip().splitlines() == [
        "warning: compute='bfloat16': this CPU has no native bfloat16 (AVX512-BF16 or AMX), and PyTorch's LSTM has no "
        "bfloat16 kernel without it; computing in float32 (32-true)"]
