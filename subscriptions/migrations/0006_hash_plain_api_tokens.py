"""Turn the plain API tokens of rest_framework.authtoken into knox's hashed ones; the same keys keep working.

Up to this version API tokens were DRF's authtoken tokens, kept in clear text in the table authtoken_token.
knox finds a token by the first 15 characters of the key sent (token_key) and checks the SHA-512 of the whole
key against its digest, whatever the key's length: an old 40-character key stored that way authenticates as
before. Each is copied with its user and creation time and no expiry (it had none; a client must not find
itself locked out one day by an upgrade); then the table of plain keys is dropped, with authtoken's record
of its migrations, as if that app had never been installed. Not reversible: the plain keys are gone.
"""

from __future__ import annotations

import hashlib

from django.db import migrations

PLAIN_TABLE = "authtoken_token"
TOKEN_KEY_LENGTH = 15  # knox.settings.CONSTANTS.TOKEN_KEY_LENGTH, fixed by knox's table


def digest(key: str) -> str:
    """knox.crypto.hash_token with knox's default SECURE_HASH_ALGORITHM (sha512), which this project keeps."""
    return hashlib.sha512(key.encode("utf-8")).hexdigest()


def hash_plain_tokens(apps, schema_editor) -> None:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if PLAIN_TABLE not in connection.introspection.table_names(cursor):
            return  # a new database: there never were plain tokens
        cursor.execute(f'SELECT "key", "user_id", "created" FROM "{PLAIN_TABLE}"')
        plain = cursor.fetchall()
    AuthToken = apps.get_model("knox", "AuthToken")
    AuthToken.objects.bulk_create(
        AuthToken(digest=digest(key), token_key=key[:TOKEN_KEY_LENGTH], user_id=user_id, expiry=None)
        for key, user_id, _ in plain
    )
    for key, _, created in plain:
        # `created` was set to now on insert (auto_now_add): put the token's own date back.
        AuthToken.objects.filter(pk=digest(key)).update(created=created)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {connection.ops.quote_name(PLAIN_TABLE)}")
        cursor.execute("DELETE FROM django_migrations WHERE app = %s", ["authtoken"])


class Migration(migrations.Migration):

    dependencies = [
        ("subscriptions", "0005_bad_token_attempts"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [
        migrations.RunPython(hash_plain_tokens, migrations.RunPython.noop, elidable=False),
    ]
