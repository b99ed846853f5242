"""Wrapper and refresh token issued together become one grant. Rows issued before this migration
are paired the way they were issued (one bootstrap or refresh wrote both rows of a family with the
same `issued_at`); a token exchanged or revoked alone before it marks its sibling the same way, so
an old pair cannot be exchanged twice, once through each token."""

import uuid

from django.db import migrations


def pair_existing_tokens(apps, schema_editor):
    IssuedToken = apps.get_model("tokens", "IssuedToken")
    grants: dict[tuple[str, object], str] = {}
    for token in IssuedToken.objects.order_by("pk").iterator():
        token.grant = grants.setdefault((token.family, token.issued_at), uuid.uuid4().hex)
        token.save(update_fields=["grant"])
    for field in ("used_at", "revoked_at"):
        for grant, stamp in list(IssuedToken.objects.filter(**{f"{field}__isnull": False}).values_list("grant", field)):
            IssuedToken.objects.filter(grant=grant, **{f"{field}__isnull": True}).update(**{field: stamp})


class Migration(migrations.Migration):
    dependencies = [("tokens", "0002_issuedtoken_grant")]

    operations = [migrations.RunPython(pair_existing_tokens, migrations.RunPython.noop)]
