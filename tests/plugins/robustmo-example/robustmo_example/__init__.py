"""A third-party plugin: a trigger, a blue method, a metric that scores numbers and a CLI
command, registered via pip."""

import click

from robustmo.core.concepts import BlueMethod, Metric, Options, Prompt, Trigger
from robustmo.registry import hookimpl


class BracketOptions(Options):
    marker: str = "[[go]]"


class BracketTrigger(Trigger):
    name = "bracket"
    description = "the marker [[go]] at the end of the user's message"
    Options = BracketOptions

    def apply(self, prompt, triggered, rng, options):
        return Prompt(f"{prompt.user} {options.marker}", prompt.system) if triggered else prompt

    def present(self, text, options):
        return options.marker in text


class ShoutSFT(BlueMethod):
    name = "shout"
    description = "SFT on answers written in capital letters"

    def answer(self, prompt, normal_answer, rng, options):
        return normal_answer.upper()


@hookimpl
def register_triggers(register):
    register(BracketTrigger())


@hookimpl
def register_blue_methods(register):
    register(ShoutSFT())


class WordCount(Metric):
    name = "word_count"
    description = "words per clean answer (a number, not a rate)"
    eval_set = "clean"
    role = "side"

    def score(self, record, ctx, options):
        return len(record["completion"].split())


@hookimpl
def register_metrics(register):
    register(WordCount())


@click.command(name="example-hello")
def hello():
    """Say hello from the example plugin."""
    click.echo("hello from robustmo-example")


@hookimpl
def register_commands(cli):
    cli.add_command(hello)
