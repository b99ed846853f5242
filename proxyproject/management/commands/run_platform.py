from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from proxyproject.launcher import accepts_connections, answers_health, demo_environment, platform_children, supervise
from proxyproject.operators import OperatorLogin, ensure_operator_login

_RULE = "-" * 78


class Command(BaseCommand):
    # Checked in handle, once demo mode is known: its key answers gateway.W001's "no upstream key".
    requires_system_checks: list[str] = []
    help = "Migrate, ensure an operator login, and run the gateway, Celery worker and beat (make run)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")

    def handle(self, *args, host: str, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        env, demo_key = demo_environment()
        if demo_key:
            settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "gateway.W001"]
        self.check(display_num_errors=False)
        call_command("migrate", interactive=False, verbosity=0, skip_checks=True)
        login = ensure_operator_login()
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{settings.PORT}"
        summary = self.summary(url, login, demo_key)

        def announce_once_ready() -> bool:
            upstream_up = demo_key is None or accepts_connections("127.0.0.1", settings.FAKE_UPSTREAM_PORT)
            if not (upstream_up and answers_health(url)):
                return False
            self.stdout.write(summary)
            self.stdout.flush()
            return True

        raise SystemExit(
            supervise(platform_children(host, demo_key), env, settings.SHUTDOWN_GRACE_SECONDS + 5, announce_once_ready)
        )

    def summary(self, url: str, login: OperatorLogin, demo_key: str | None) -> str:
        """Printed last, once the gateway answers: what to open and how to log in."""
        lines = [_RULE, f"Gateway ready: {url}   (health {url}/healthz, API docs {url}/api/docs)", f"Admin:         {url}/admin/"]
        if login.created and login.password:
            lines.append(self.style.WARNING(f"Login:         {login.username} / {login.password}   (shown once)"))
        else:
            lines.append(f"Login:         {login.username}")
        lines.append(f"               forgot it? make manage ARGS='changepassword {login.username}'")
        if demo_key:
            lines.append(
                self.style.WARNING(
                    f"Demo mode:     the bundled fake Anthropic API on 127.0.0.1:{settings.FAKE_UPSTREAM_PORT}; "
                    "set ANTHROPIC_API_KEY for the real one"
                )
            )
        lines += ["Stop:          Ctrl-C", _RULE]
        return "\n".join(lines)
