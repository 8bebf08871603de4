"""The workflow DSL, the registry of workflows, standard steps and the example node product."""
