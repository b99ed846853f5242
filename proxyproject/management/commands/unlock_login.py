import getpass

from django.core.management.base import BaseCommand, CommandError

from proxyproject.login_lockout import unlock_login


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Lift a console login lockout: forget the failed logins of a username and/or a client address."

    def add_arguments(self, parser):
        parser.add_argument("--username", help="The login name that is locked out.")
        parser.add_argument("--ip", help="The client address that is locked out.")

    def handle(self, *args, **options):
        username, address = options["username"], options["ip"]
        if not (username or address):
            raise CommandError("Give --username, --ip or both.")
        removed = unlock_login(username=username, address=address, actor=f"cli:{getpass.getuser()}")
        target = " and ".join(part for part in (username and f"username {username!r}", address and f"address {address}") if part)
        self.stdout.write(f"Unlocked {target}: {removed} failure counter(s) cleared.")
