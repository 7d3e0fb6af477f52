"""lm-evaluation-harness as a capability metric (``pip install -e ".[lm-eval]"``).

    robustmo run ... --capability-metric lm_eval \\
        --opt metric.lm_eval.task=my_math --opt metric.lm_eval.include_path=./tasks

At the organism and at every blue checkpoint, lm-eval's HF backend (``HFLM``) evaluates the
model in memory, the PEFT adapter as it is (not merged), on the named task, and its
per-sample metric (``acc`` by default) becomes robustmo's per-prompt score: the value is the
task's score, with robustmo's 95 % interval, and the AUC measures capability by it. The
samples are stored in ``generations.jsonl`` (``harness: lm_eval``). The task is one of lm-eval's
own or, with ``include_path``, a local task YAML (with ``dataset_path: json`` and local
``data_files`` nothing is downloaded). Global random state is left alone (lm-eval's seeding of
``random``/numpy/torch is off), so training goes on as it would without the metric.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import DirectoryPath, Field

from robustmo.core.concepts import Metric, Options
from robustmo.core.errors import RobustmoError
from robustmo.registry import hookimpl

INSTALL = 'pip install -e ".[lm-eval]"'


class LMEvalOptions(Options):
    task: str | None = Field(None, description="the lm-eval task to run (its name; a local YAML's `task:` with "
                             "include_path); none: the metric is off")
    include_path: DirectoryPath | None = Field(None, description="a directory of local task YAMLs (then only these "
                                               "tasks are indexed, not lm-eval's built-in ones)")
    metric: str = Field("acc", description="the per-sample metric of the task that becomes the score (acc, "
                        "exact_match, ...)")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples (default: the task's own)")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N samples of the task")
    batch_size: int = Field(1, ge=1, description="lm-eval's batch size (1: the scores do not depend on padding)")


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: str | None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_path is None)


class LMEvalCapability(Metric):
    name = "lm_eval"
    description = ("capability by an lm-evaluation-harness task, run on the model at every evaluation (--opt "
                   f"metric.lm_eval.task=NAME; needs {INSTALL})")
    eval_set = "capability"
    role = "capability"
    runs_model = True
    Options = LMEvalOptions

    def active(self, options) -> bool:
        return options.task is not None

    def evaluate_model(self, model, tokenizer, options) -> list[dict]:
        try:
            import lm_eval
            from lm_eval.models.huggingface import HFLM
        except ImportError:
            raise RobustmoError(f"metric lm_eval needs lm-evaluation-harness: {INSTALL}") from None
        from robustmo.core.models import quiet_libraries

        quiet_libraries()
        include = str(Path(options.include_path).resolve()) if options.include_path else None
        manager = _task_manager(include)
        if options.task not in manager.all_tasks:
            where = f"in {include}" if include else "among lm-eval's tasks"
            raise RobustmoError(f"--opt metric.lm_eval.task={options.task}: no such task {where}; a local task YAML "
                                "names itself with `task:` (give its directory with metric.lm_eval.include_path)")
        import logging
        import os

        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on a model passed in, default aggregations
        was_training, bars = model.training, os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # lm-eval's progress bars at every checkpoint: robustmo shows its own
        try:
            device = str(next(model.parameters()).device)
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size, device=device)
            out = lm_eval.simple_evaluate(model=lm, tasks=[options.task], task_manager=manager,
                                          num_fewshot=options.num_fewshot, limit=options.limit, log_samples=True,
                                          random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                                          verbosity="ERROR")
        finally:
            model.train(was_training)
            if bars is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = bars
        samples = sorted(out["samples"][options.task], key=lambda s: s["doc_id"])
        if not samples or options.metric not in samples[0]:
            found = sorted(k for k in (samples[0] if samples else {}) if isinstance(samples[0][k], (int, float)))
            raise RobustmoError(f"--opt metric.lm_eval.metric={options.metric}: task {options.task} reports no such "
                                f"per-sample metric (it has: {', '.join(found) or 'none'})")
        values = [float(s[options.metric]) for s in samples]
        binary = all(v in (0.0, 1.0) for v in values)
        return [{"prompt": str(s["arguments"][0][0]) if s.get("arguments") else str(s.get("doc")),
                 "completion": str(s.get("filtered_resps")), "content": str(s.get("target")),
                 "task": f"lm_eval:{options.task}", "score": bool(v) if binary else v}
                for s, v in zip(samples, values)]


@hookimpl
def register_metrics(register):
    register(LMEvalCapability())
