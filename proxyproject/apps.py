from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ProxyProjectConfig(AppConfig):
    name = "proxyproject"
    verbose_name = "Platform"
    default = True

    def ready(self) -> None:
        from proxyproject import checks  # noqa: F401  (registers the system checks)
        from proxyproject import login_lockout  # noqa: F401  (connects the lockout audit receiver)
        from proxyproject.health import register_platform_checks

        register_platform_checks()


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """Django's admin whose default site asks the optional second factor (proxyproject/second_factor.py)."""

    default = False
    default_site = "proxyproject.second_factor.ConsoleAdminSite"
