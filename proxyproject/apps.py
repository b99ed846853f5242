import os

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin import apps as admin_apps


class ProxyProjectConfig(AppConfig):
    name = "proxyproject"
    verbose_name = "Platform"
    default = True

    def ready(self) -> None:
        export_metrics_dir()
        from proxyproject import (
            checks,  # noqa: F401  (registers the system checks)
            login_lockout,  # noqa: F401  (connects the lockout audit receiver)
        )
        from proxyproject.health import register_platform_checks

        register_platform_checks()


def export_metrics_dir() -> None:
    """prometheus_client picks its multiprocess mode from PROMETHEUS_MULTIPROC_DIR when it is first
    imported, and writes each worker's samples there: the folder must exist and the variable be set
    before any module defining a metric is imported. The one write to os.environ, for a library."""
    settings.METRICS_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.METRICS_DIR)


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """Django's admin whose default site asks the optional second factor and opens on an overview (proxyproject/admin_site.py)."""

    default = False
    default_site = "proxyproject.admin_site.GatewayAdminSite"
