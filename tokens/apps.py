from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "Devices and tokens"

    def ready(self) -> None:
        from proxyproject.lib.lifespan import on_startup
        from tokens import (
            checks,  # noqa: F401  (registers the system checks)
            people_admin,  # noqa: F401  (registers the people pages beside tokens.admin's)
        )
        from tokens.signing_keys import report_stranded_development_keys_at_startup

        on_startup(report_stranded_development_keys_at_startup)
