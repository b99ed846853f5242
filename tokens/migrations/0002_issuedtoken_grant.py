"""Wrapper and refresh token issued together become one grant. Rows issued before this migration
are paired the way they were issued: one bootstrap or refresh wrote both rows of a family with the
same `issued_at`."""
import uuid

from django.db import migrations, models


def pair_existing_tokens(apps, schema_editor):
    IssuedToken = apps.get_model("tokens", "IssuedToken")
    grants: dict[tuple[str, object], str] = {}
    for token in IssuedToken.objects.order_by("pk").iterator():
        token.grant = grants.setdefault((token.family, token.issued_at), uuid.uuid4().hex)
        token.save(update_fields=["grant"])


class Migration(migrations.Migration):
    dependencies = [("tokens", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="issuedtoken",
            name="grant",
            field=models.CharField(default="", max_length=64, db_index=True, help_text="Shared by the wrapper and refresh token issued together."),
            preserve_default=False,
        ),
        migrations.RunPython(pair_existing_tokens, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="issuedtoken",
            name="used_at",
            field=models.DateTimeField(blank=True, help_text="When its grant was exchanged (single use).", null=True),
        ),
    ]
