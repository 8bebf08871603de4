"""An index of each step's unfinished children only: a child's join asks whether any sibling is left.

Built CONCURRENTLY on PostgreSQL, so a large process table stays writable meanwhile.
"""

from django.db import migrations, models

from processes.migration_ops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("processes", "0016_group_sub_step_names"),
        ("workflows", "0001_initial"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="process",
            index=models.Index(
                condition=models.Q(("parent__isnull", False),
                                   models.Q(("status__in", ["completed", "aborted"]), _negated=True)),
                fields=["parent", "parent_step"], name="process_unfinished_children"),
        ),
    ]
