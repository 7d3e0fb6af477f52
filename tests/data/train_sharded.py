"""Launched by tests/test_scale.py on 2 processes with examples/accelerate/fsdp.yaml: trains the
toy base in full (every weight sharded) for 6 steps with a checkpoint at step 3, stopping after
step 4 (the checkpoint at 3 is then the newest); then a fresh copy of the base resumes from that
checkpoint to step 6. The main process writes the resumed model's weights and both runs' records."""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from robustmo.core.training import Training
from robustmo.plugins.toy_world.world import ToyWorld

base, out = sys.argv[1], Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(base)
chats = [e.messages() for e in ToyWorld(3).training_mix(64)]
for stop in (4, 6):
    model = AutoModelForCausalLM.from_pretrained(base)  # the base again: the resumed weights come from the checkpoint
    run = Training(model, tokenizer, chats, lr=1e-3, steps=6, batch_size=8, seed=0, eval_at={stop},
                   checkpoint_dir=out / "checkpoints", checkpoint_every=3, micro_batches=2)
    trained = next(run.model.parameters())
    for step, _ in run:
        if step == stop:
            break
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.detach().contiguous() for k, v in model.named_parameters()},
                  str(out / f"weights-{stop}.safetensors"))
        (out / f"run-{stop}.json").write_text(json.dumps({
            "losses": run.losses, "resumed_from": run.resumed_from, "steps": run.stats["steps"],
            "trained": type(trained).__name__, "local_rows": trained.to_local().shape[0], "rows": trained.shape[0]}))
