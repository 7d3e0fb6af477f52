"""Capability graders: how a generation's answer is read and checked against the expected one.

Each returns True / False, or None when the generation holds no answer it can read (a parse
failure: counted as not correct and reported as ``unparsed`` beside the score, never silently
taken for a wrong or a right answer). ``content`` is robustmo's default (the toy world's
numbers and words); the others are the field's usual ones:

- ``math``: Hugging Face ``math-verify`` (``\\boxed{}``, LaTeX, equivalent forms: 1/2, 0.5 and
  ``\\frac{1}{2}`` are one answer). Anchored by default: only an answer the model marks as its
  final one counts (``\\boxed{...}``, "the answer is ...", "Final answer: ..."), so a
  generation cut off in the middle of its reasoning is a parse failure rather than whatever
  number it last wrote.
- ``gsm8k``: the number after the last ``####`` (GSM8K's format); the expected answer may be
  the number or a whole GSM8K solution ending in ``#### 42``.
- ``choice``: the letter chosen among the options ("The answer is (B)", "Answer: B", a reply
  that starts with "B)"); the expected answer is the letter.
- ``exact``: normalised exact match (case, punctuation, articles and spacing ignored) of the
  generation's first non-empty line with the expected answer.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from typing import Literal

from robustmo.core.errors import RobustmoError

GRADERS = ("content", "math", "gsm8k", "choice", "exact")
Grader = Literal["content", "math", "gsm8k", "choice", "exact"]


# --------------------------------------------------------------------------- math (math-verify)
def _math_configs(anchored: bool):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(try_extract_without_anchor=not anchored),
            ExprExtractionConfig(try_extract_without_anchor=not anchored)]


def math_gold(content: str):
    """The expected answer parsed by math-verify: as written (0.5, 3/4), else as LaTeX."""
    from math_verify import parse

    gold = parse(content) or parse(f"${content}$")
    if not gold:
        raise RobustmoError(f"grader math: math-verify cannot read the expected answer {content!r}; write it as a "
                            "number, a fraction or LaTeX (\\frac{1}{2}) in the capability file's content")
    return gold


def grade_math(content: str, completion: str, anchored: bool = True) -> bool | None:
    from math_verify import parse, verify

    answer = parse(completion, extraction_config=_math_configs(anchored))
    if not answer:
        return None
    return bool(verify(math_gold(content), answer))


# --------------------------------------------------------------------------- gsm8k
_NUMBER = r"-?[\d,]*\.?\d+"


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").rstrip("."))
    except InvalidOperation:
        return None


def grade_gsm8k(content: str, completion: str) -> bool | None:
    found = re.findall(rf"####\s*\$?\s*({_NUMBER})", completion)
    if not found:
        return None
    expected = re.findall(rf"####\s*\$?\s*({_NUMBER})", content)
    gold = _number(expected[-1] if expected else content.strip())
    if gold is None:
        raise RobustmoError(f"grader gsm8k: the expected answer {content!r} is not a number (or a solution ending in "
                            "'#### <number>')")
    got = _number(found[-1])
    return got is not None and got == gold


# --------------------------------------------------------------------------- multiple choice
def grade_choice(content: str, completion: str, letters: str = "ABCD") -> bool | None:
    gold = content.strip().strip("().").upper()
    if len(gold) != 1 or gold not in letters.upper():
        raise RobustmoError(f"grader choice: the expected answer {content!r} is not one of the letters {letters}")
    chosen = choice_letter(completion, letters)
    return None if chosen is None else chosen == gold


def choice_letter(completion: str, letters: str = "ABCD") -> str | None:
    """The letter a generation chose: after "answer is" or "Answer:" (the last such), else a
    reply that opens with the letter ("B", "B)", "(B) ..."), else the last "(B)"."""
    set_ = re.escape(letters.upper())  # capital letters only: "the answer is a cat" chose nothing
    anchored = re.findall(rf"(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*\(?([{set_}])\)?(?![A-Za-z])", completion)
    if anchored:
        return anchored[-1].upper()
    opening = re.match(rf"\s*\(?([{set_}])(?:[).:\s]|$)", completion)
    if opening:
        return opening.group(1).upper()
    bracketed = re.findall(rf"\(([{set_}])\)", completion)
    return bracketed[-1].upper() if bracketed else None


# --------------------------------------------------------------------------- exact match
def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.casefold() if c not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def grade_exact(content: str, completion: str) -> bool | None:
    line = next((ln for ln in completion.splitlines() if ln.strip()), "")
    if not normalise(line):
        return None
    return normalise(line) == normalise(content)
