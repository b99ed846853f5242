from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        """System checks, the breaker's deep health check and its tile on the usage dashboard, loading
        the upstream key pool at start-up, and at shut-down closing each worker's upstream pool and
        writing the metrics it gathered."""
        from gateway import checks  # noqa: F401  (registers the system checks)
        from gateway.api import current_breaker_body
        from gateway.health import register_breaker_health_check
        from gateway.keypool import preload_upstream_key_pool
        from gateway.metrics import flush_gathered_metrics
        from gateway.upstream import close_upstream_client
        from proxyproject.lib.lifespan import on_shutdown, on_startup
        from usage.dashboard import register_breaker_state

        register_breaker_health_check()
        register_breaker_state(current_breaker_body)
        on_startup(preload_upstream_key_pool)
        on_shutdown(close_upstream_client)
        on_shutdown(flush_gathered_metrics)
