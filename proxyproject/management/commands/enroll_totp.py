from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice

from proxyproject.second_factor import totp_device_of


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Give a console user a TOTP device; prints its otpauth:// URL (for an authenticator app) once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="Replace the user's existing TOTP device.")
        parser.add_argument("--yes", action="store_true", help="Confirm --replace (the old device stops working).")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        if totp_device_of(user) is not None:
            if not options["replace"]:
                raise CommandError(f"{user.username} already has a TOTP device; --replace --yes gives a new one.")
            if not options["yes"]:
                self.stdout.write(f"Would replace {user.username}'s TOTP device (the old codes stop working); add --yes.")
                return
            TOTPDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name="console", confirmed=True)
        self.stdout.write(
            f"TOTP device created for {user.username}. Add it to an authenticator app (shown once):\n{device.config_url}"
        )
