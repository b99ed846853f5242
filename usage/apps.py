from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage and spend"

    def ready(self) -> None:
        """System checks, price-table invalidation signals, and each ASGI worker's price table,
        usage writer and spend counters."""
        from proxyproject.lib.lifespan import on_shutdown, on_startup
        from usage import checks  # noqa: F401  (registers the system checks)
        from usage.price_table import preload_price_table  # importing registers the ModelPrice signal receivers
        from usage.spend import load_spend_counters
        from usage.writer import start_usage_writer, stop_usage_writer

        on_startup(preload_price_table)
        on_startup(start_usage_writer)
        on_startup(load_spend_counters)
        on_shutdown(stop_usage_writer)
