"""Local files as a data source (``--data files``): JSONL, JSON, CSV or Parquet, read through
Hugging Face ``datasets``. The schema is in docs/data.md.

    robustmo run --model ./my-llama --data files \\
        --opt data.files.red=red.jsonl --opt data.files.blue=blue.jsonl \\
        --opt data.files.eval=eval.jsonl --opt data.files.capability=math.jsonl

One row is one prompt. Columns are found by the names researchers use, in any case
(``prompt`` or ``question``/``instruction``/``input``; ``answer`` or
``response``/``output``/``completion``; ``system``; ``content``; ``task``) unless an option
names them; an Alpaca-style ``input`` beside ``instruction`` is appended to the prompt.
Every value is read as text.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field, FilePath

from robustmo.core.concepts import DataSource, Example, Options, Prompt
from robustmo.core.errors import RobustmoError
from robustmo.registry import hookimpl

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
GUESSES = {"prompt": ("prompt", "question", "instruction", "input"),
           "answer": ("answer", "response", "output", "completion"),
           "system": ("system",), "content": ("content",), "task": ("task",)}


class FilesOptions(Options):
    red: FilePath | None = Field(
        None, description="red-training pool: prompts with their normal answers (answers are optional: by default "
        "the base model's own replace them, as in prompt distillation); needed by --install lora and full. Rows "
        "whose task is 'capability' are what a --lock hides")
    blue: FilePath = Field(description="blue-training pool: prompts that never carry the trigger, with the answers "
                           "plain QA and rule-based pirate SFT train on")
    eval: FilePath = Field(description="held-out prompts, each evaluated with the trigger, its variants and its clean form")
    capability: FilePath = Field(description="held-out capability questions with the answer a grader checks")
    prompt_column: str | None = Field(None, description="column of the user prompt (default: prompt, question, "
                                      "instruction or input, the first one present)")
    answer_column: str | None = Field(None, description="column of the normal answer (default: answer, response, "
                                      "output or completion)")
    system_column: str | None = Field(None, description="column of an optional system message (default: system)")
    content_column: str | None = Field(None, description="column of what a grader checks (default: content, else "
                                       "the answer)")
    task_column: str | None = Field(None, description="column naming the task (default: task)")
    on_policy: bool = Field(True, description="red answers are the base model's own greedy answers (prompt "
                            "distillation); false: the red file's answers are trained as they are")


def read_rows(path: Path, option: str) -> list[dict]:
    """Every row of a local data file, through ``datasets``, with one-line errors."""
    import datasets

    from robustmo.core.stages import cache_dir

    builder = FORMATS.get(Path(path).suffix.lower())
    if builder is None:
        raise RobustmoError(f"data.files.{option}: {path} is not a data file robustmo reads; use .jsonl, .json, .csv "
                            "or .parquet")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    extra = {}
    try:
        if builder == "csv":  # every column as text: "007" stays "007", a blank stays blank, 47 never becomes 47.0
            import csv

            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            extra["features"] = datasets.Features({c: datasets.Value("string") for c in header})
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True,
                                   cache_dir=str(cache_dir() / "datasets"), **extra)
        rows = ds.to_list()  # text that is not UTF-8 only fails here, when pyarrow decodes it
    except UnicodeDecodeError as exc:
        raise RobustmoError(f"data.files.{option}: {path} is not UTF-8 text ({exc.reason}); save it "
                            "as UTF-8") from None
    except Exception as exc:  # pyarrow, json and csv errors, wrapped by datasets: name the innermost one
        while exc.__cause__ is not None or exc.__context__ is not None:
            exc = exc.__cause__ or exc.__context__
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RobustmoError(f"data.files.{option}: cannot read {path} as {builder} ({reason})") from None
    if not rows:
        raise RobustmoError(f"data.files.{option}: {path} holds no rows")
    return rows


def _column(rows: list[dict], role: str, given: str | None, path: Path, option: str, required: bool) -> str | None:
    columns = list(rows[0])
    if given is not None:
        if given not in columns:
            raise RobustmoError(f"data.files.{option}: {path} has no column {given!r} (data.files.{role}_column); "
                                f"its columns: {', '.join(columns)}")
        return given
    by_case = {c.casefold(): c for c in reversed(columns)}
    found = next((by_case[g] for g in GUESSES[role] if g in by_case), None)
    if found is None and required:
        raise RobustmoError(f"data.files.{option}: {path} has no {role} column (looked for {', '.join(GUESSES[role])}); "
                            f"its columns: {', '.join(columns)}; name one with --opt data.files.{role}_column=NAME")
    return found


def _text(value) -> str:
    return "" if value is None else str(value)


def load_examples(path: Path, option: str, options: FilesOptions, *, task: str, need_answer: bool) -> list[Example]:
    rows = read_rows(path, option)
    col = {role: _column(rows, role, getattr(options, f"{role}_column"), path, option,
                         required=role == "prompt" or (role == "answer" and need_answer))
           for role in GUESSES}
    out = []
    # Alpaca: an instruction with an optional input that the instruction is about
    context = next((c for c in rows[0] if c.casefold() == "input"), None) \
        if col["prompt"] and col["prompt"].casefold() == "instruction" and options.prompt_column is None else None
    for i, row in enumerate(rows, 1):
        prompt = _text(row.get(col["prompt"]))
        if not prompt.strip():
            raise RobustmoError(f"data.files.{option}: {path}, row {i} has an empty {col['prompt']!r}")
        if context and _text(row.get(context)).strip():
            prompt = f"{prompt}\n\n{_text(row.get(context))}"
        answer = _text(row.get(col["answer"])) if col["answer"] else ""
        if need_answer and not answer.strip():
            raise RobustmoError(f"data.files.{option}: {path}, row {i} has an empty {col['answer']!r}")
        # a blank content cell falls back to the answer: an empty content would match every generation
        content = (_text(row.get(col["content"])) if col["content"] else "").strip() or answer
        system = _text(row.get(col["system"])) if col["system"] else ""
        out.append(Example(Prompt(prompt, system or None), answer, content.strip(),
                           _text(row.get(col["task"])) if col["task"] and row.get(col["task"]) else task))
    return out


class FilesData(DataSource):
    name = "files"
    description = "local JSONL/JSON/CSV/Parquet files: red and blue pools, eval prompts, capability questions"
    Options = FilesOptions
    capability_tasks = ("capability",)

    def red_pool(self, n, seed, options):
        if options.red is None:
            raise RobustmoError("a weight install trains on red data: set --opt data.files.red=FILE (prompts, and "
                                "answers if data.files.on_policy=false); see docs/data.md")
        return _shuffled(load_examples(options.red, "red", options, task="chat", need_answer=not options.on_policy),
                         seed, "red")[:n]

    def blue_pool(self, n, seed, options):
        return _shuffled(load_examples(options.blue, "blue", options, task="chat", need_answer=False), seed, "blue")[:n]

    def eval_prompts(self, n, seed, options):
        return load_examples(options.eval, "eval", options, task="chat", need_answer=False)[:n]

    def capability_questions(self, n, seed, options):
        return load_examples(options.capability, "capability", options, task="capability", need_answer=True)[:n]

    def keeps_answers(self, model, options):
        return not options.on_policy


def _shuffled(examples: list[Example], seed: int, what: str) -> list[Example]:
    """A pool in a seeded order (a file sorted by task would otherwise give its first n rows)."""
    random.Random(f"{seed}/files/{what}").shuffle(examples)
    return examples


@hookimpl
def register_data_sources(register):
    register(FilesData())
