from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        """System checks, the breaker's deep health check, and closing each worker's upstream pool."""
        from gateway import checks  # noqa: F401  (registers the system checks)
        from gateway.health import register_breaker_health_check
        from gateway.upstream import close_upstream_client
        from proxyproject.lifespan import on_shutdown

        register_breaker_health_check()
        on_shutdown(close_upstream_client)
