"""Seconds per batch of 8 of the bundled model with mul8u_197B (no flip) after warm-up, on every JAX device.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python bench/devices.py   # then with =1, alternating
"""
import json, time
import numpy as np
from jaxdepth.cli import common
common.enable_compile_cache()
import jax
from jaxdepth import inference
model, variables, info = common.load_model(None)
plan = common.make_plan("mul8u_197B", None, None)
native = inference.model_input_size(model, info)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (8, *native, 3)).astype(np.uint8)
qmodel, qvars = inference.quantized(model, variables, plan, images[:4].astype(np.float32) / 255)
pred = inference.make_predictor(qmodel, qvars, flip=False)
out = pred(images)  # compile / load
times = []
for _ in range(4):
    t = time.perf_counter(); out = pred(images); times.append(time.perf_counter() - t)
print(json.dumps({"devices": jax.device_count(), "batch": 8, "times": [round(t, 3) for t in times],
                  "median": round(float(np.median(times)), 3)}))
