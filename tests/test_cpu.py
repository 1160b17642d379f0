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
