from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from proxyproject.launcher import demo_environment, platform_children, supervise
from proxyproject.operators import ensure_operator_login


class Command(BaseCommand):
    help = "Migrate, ensure an operator login, and run the gateway, Celery worker and beat (make run)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")

    def handle(self, *args, host: str, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        # Checks run in the children, which see the demo key; here they would warn about its absence.
        call_command("migrate", interactive=False, verbosity=0, skip_checks=True)
        login = ensure_operator_login()
        if login.created and login.password:
            self.stdout.write(self.style.WARNING(f"Operator login created (shown once): {login.username} / {login.password}"))
        elif login.created:
            self.stdout.write(f"Operator login created from ADMIN_USERNAME/ADMIN_PASSWORD: {login.username}")
        env, demo_key = demo_environment()
        if demo_key:
            self.stdout.write(self.style.WARNING(
                "DEMO MODE: no ANTHROPIC_API_KEY is set, so the gateway talks to the bundled fake Anthropic API "
                f"on 127.0.0.1:{settings.FAKE_UPSTREAM_PORT}. Set ANTHROPIC_API_KEY to use the real API."
            ))
        self.stdout.write(f"Gateway:  http://{host}:{settings.PORT}  (admin at /admin/, health at /healthz)")
        raise SystemExit(supervise(platform_children(host, demo_key), env, settings.SHUTDOWN_GRACE_SECONDS + 5))
