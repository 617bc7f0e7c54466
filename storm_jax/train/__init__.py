"""Training: config checks, the optimiser, the sharded train / eval steps, the host loop.

  from storm_jax import train
  final_metrics = train.train_and_evaluate(config, workdir)

  mesh = train.make_mesh()
  steps = train.make_steps(config, mesh)              # jitted, sharded train / eval / preview
  state = train.create_train_state(config, steps.ctx.model, key, mesh)
  state, metrics = steps.train(state, data.to_global(batch, steps.batch_sharding), key)

Modules:
  config  validation, derived step counts, build_mixer / build_model, the config's data.
  optim   the schedule registry (`SCHEDULES`) and the SGD optimiser.
  step    TrainState, StepContext, train_step / eval_step, `step_key`, `make_steps`.
  loop    `train_and_evaluate`: prefetch, metrics window, eval, checkpoints, SIGTERM.
"""

from storm_jax.train.config import COMPUTE_DTYPES
from storm_jax.train.config import MIX_SCOPES
from storm_jax.train.config import SALIENCY_BATCH_STATS
from storm_jax.train.config import build_mixer
from storm_jax.train.config import build_model
from storm_jax.train.config import check_has_boxes
from storm_jax.train.config import dataset_info
from storm_jax.train.config import eval_iterator
from storm_jax.train.config import mix_off_step
from storm_jax.train.config import num_train_examples
from storm_jax.train.config import steps_per_epoch
from storm_jax.train.config import total_steps
from storm_jax.train.config import train_iterator
from storm_jax.train.config import validate_config
from storm_jax.train.loop import MetricsWindow
from storm_jax.train.loop import evaluate_split
from storm_jax.train.loop import restore_for_eval
from storm_jax.train.loop import train_and_evaluate
from storm_jax.train.optim import SCHEDULES
from storm_jax.train.optim import Schedule
from storm_jax.train.optim import make_optimizer
from storm_jax.train.optim import make_schedules
from storm_jax.train.optim import register_schedule
from storm_jax.train.step import StepContext
from storm_jax.train.step import Steps
from storm_jax.train.step import TrainState
from storm_jax.train.step import create_train_state
from storm_jax.train.step import eval_step
from storm_jax.train.step import jit_steps
from storm_jax.train.step import make_context
from storm_jax.train.step import make_mesh
from storm_jax.train.step import make_steps
from storm_jax.train.step import mixed_inputs
from storm_jax.train.step import saliency_pass
from storm_jax.train.step import normalize
from storm_jax.train.step import step_key
from storm_jax.train.step import train_step
