"""Wrapper and refresh token issued together become one grant (the rows are paired in 0003: on
PostgreSQL the new index is built when this migration ends, which it cannot do after data updates
in the same transaction)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tokens", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="issuedtoken",
            name="grant",
            field=models.CharField(
                default="", max_length=64, db_index=True, help_text="Shared by the wrapper and refresh token issued together."
            ),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="issuedtoken",
            name="used_at",
            field=models.DateTimeField(blank=True, help_text="When its grant was exchanged (single use).", null=True),
        ),
    ]
