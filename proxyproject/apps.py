from django.apps import AppConfig


class ProxyProjectConfig(AppConfig):
    name = "proxyproject"
    verbose_name = "Platform"

    def ready(self) -> None:
        from proxyproject import checks  # noqa: F401  (registers the system checks)
        from proxyproject import login_lockout  # noqa: F401  (connects the lockout audit receiver)
