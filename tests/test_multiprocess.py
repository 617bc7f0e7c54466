"""Two JAX processes on one machine: the project's stand-in for a multi-host pod.

`run_processes` starts N python processes that join through `jax.distributed` with a
coordinator on 127.0.0.1, each with its own simulated CPU devices; cross-process collectives
run over gloo. Each worker prints one JSON line last; the harness returns them by process.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

_PREAMBLE = """
import json, os, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=os.environ['TEST_COORDINATOR'],
                           num_processes=int(os.environ['TEST_NUM_PROCESSES']),
                           process_id=int(os.environ['TEST_PROCESS_ID']),
                           initialization_timeout=120)
import numpy as np
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(body: str, *, num_processes: int = 2, devices_per_process: int = 4,
                  timeout: float = 300) -> list[dict]:
  """Runs `body` (after the jax.distributed preamble) in each process; returns their JSON."""
  port = _free_port()
  procs = []
  for i in range(num_processes):
    env = dict(os.environ)
    flags = [f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f]
    env.update(
        XLA_FLAGS=' '.join(flags + [f'--xla_force_host_platform_device_count='
                                    f'{devices_per_process}']),
        JAX_PLATFORMS='cpu', TEST_COORDINATOR=f'127.0.0.1:{port}',
        TEST_NUM_PROCESSES=str(num_processes), TEST_PROCESS_ID=str(i))
    code = _PREAMBLE + textwrap.dedent(body) + '\njax.distributed.shutdown()\n'
    procs.append(subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err[-4000:]
      outputs.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return outputs


@pytest.mark.slow
def test_two_processes_psum_over_eight_devices():
  results = run_processes("""
      mesh = jax.make_mesh((jax.device_count(),), ('data',), devices=jax.devices())
      local = np.arange(4, dtype=np.float32) + 4 * jax.process_index() + 1   # global 1..8
      x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('data')), local)
      psum = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, 'data'), mesh=mesh,
                                   in_specs=P('data'), out_specs=P()))(x)
      print(json.dumps({'process': jax.process_index(), 'count': jax.process_count(),
                        'devices': jax.device_count(), 'local': jax.local_device_count(),
                        'psum': np.asarray(psum.addressable_data(0)).tolist()}))
  """)
  assert [r['process'] for r in results] == [0, 1]
  for r in results:
    assert (r['count'], r['devices'], r['local']) == (2, 8, 4)
    assert r['psum'] == [36.0]  # 1 + ... + 8, summed across both processes


@pytest.mark.slow
def test_stop_is_agreed_across_processes():
  """Only process 0 is told to stop (at step 3); both leave after step 3, none hangs."""
  results = run_processes("""
      import signal
      from storm_jax.utils import multihost
      stop = {'flag': False}
      signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
      mesh = jax.make_mesh((jax.device_count(),), ('data',), devices=jax.devices())
      step_fn = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, 'data'), mesh=mesh,
                                      in_specs=P('data'), out_specs=P()))
      x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('data')),
                                                 np.ones(4, np.float32))
      step = 0
      while step < 10:
        step += 1
        total = float(np.asarray(step_fn(x).addressable_data(0))[0])  # a collective step
        if jax.process_index() == 0 and step == 3:
          os.kill(os.getpid(), signal.SIGTERM)   # the scheduler preempts one host only
        if multihost.agree_to_stop(stop['flag']):
          break
      print(json.dumps({'process': jax.process_index(), 'left_at': step, 'total': total,
                        'own_flag': stop['flag']}))
  """)
  assert [r['left_at'] for r in results] == [3, 3]
  assert [r['own_flag'] for r in results] == [True, False]
  assert all(r['total'] == 8.0 for r in results)
