from django.core.management.base import BaseCommand

from proxyproject.operators import ensure_operator_login


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Create the first operator login if none exists (password printed once)."

    def handle(self, *args, **options):
        login = ensure_operator_login()
        if not login.created:
            self.stdout.write(f"An operator login already exists: {login.username}")
        elif login.password:
            self.stdout.write(f"Operator login created (shown once): {login.username} / {login.password}")
        else:
            self.stdout.write(f"Operator login created: {login.username}")
