from django.apps import AppConfig


class ProxyProjectConfig(AppConfig):
    name = "proxyproject"
    verbose_name = "Platform"
