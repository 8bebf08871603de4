"""`manage.py list_workflows`: the workflows declared in code, with their target, products and input."""

from __future__ import annotations

from typing import Any

from processes.management.commands._base import ProcessCommand
from workflows.forms import json_schema
from workflows.registry import all_workflows


class Command(ProcessCommand):
    help = "List the workflows: name, target, products they serve, their input fields and steps."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--steps", action="store_true", help="Also list each workflow's steps.")

    def handle(self, *args: Any, steps: bool, **options: Any) -> None:
        specs = all_workflows()
        width = max((len(name) for name in specs), default=10)
        for name, spec in specs.items():
            schema = json_schema(spec.initial_input_form)
            fields = ", ".join(
                f"{key}{'' if key in schema['required'] else '?'}" for key in schema["properties"]
            ) or "-"
            products = ", ".join(spec.product_types) or "-"
            flags = " (usable while out of sync)" if spec.usable_while_out_of_sync else ""
            self.stdout.write(f"{name:<{width}}  {spec.target:<9}  {spec.description}{flags}")
            self.stdout.write(f"{'':<{width}}  products: {products}; input: {fields}")
            if steps:
                for number, step in enumerate(spec.steps, 1):
                    self.stdout.write(f"{'':<{width}}    {number:>2}. {step.name} ({step.kind})")
                    for letter, sub in zip("abcdefghijklmnopqrstuvwxyz", step.substeps, strict=False):
                        self.stdout.write(f"{'':<{width}}        {letter}. {sub.name} ({sub.kind})")
        self.stdout.write(f"{len(specs)} workflows.")
