"""One process of a multi-process CPU run (tests/training/test_multihost.py): jax.distributed with a local
coordinator, gloo collectives, 2 fake CPU devices per process, a tiny SFT of a few steps.

    python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT CONFIG_JSON RESULT_JSON
"""

import json
import os
import sys

pid, nproc, port, config_json, result_json = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={os.environ.get('DEVICES_PER_PROCESS', '2')}"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if nproc > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                               initialization_timeout=120)

from fusejax.training.config import load_config  # noqa: E402
from fusejax.training.loop import run  # noqa: E402

items = json.loads(open(config_json).read())
cfg = load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in items.items()])
result = run(cfg)
with open(result_json, "w") as f:
    json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "status": result.status, "losses": result.losses}, f)
