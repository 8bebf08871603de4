"""Step rows keep their step's delta; the whole state only on snapshot rows (processes.statelog).

Existing rows keep their whole state and get no delta: each reads as a snapshot, so nothing is rewritten.
On PostgreSQL the snapshot index is built CONCURRENTLY, so a large step log stays writable meanwhile.
"""

from django.db import migrations, models

from processes.migration_ops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("processes", "0009_list_order_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="processstep",
            name="delta",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="processstep",
            name="state",
            field=models.JSONField(blank=True, default=None, null=True),
        ),
        AddIndexWithoutBlocking(
            model_name="processstep",
            index=models.Index(condition=models.Q(("state__isnull", False)), fields=["process", "id"],
                               name="processstep_snapshots"),
        ),
    ]
