"""Cloud providers. Outside this package, reach a cloud only through `provider_for(kind)`
and the types and errors of `overcast.backends.base` (a unit test enforces it)."""

from __future__ import annotations

import threading

from overcast.backends.base import Provider

_lock = threading.Lock()
_providers: dict[str, Provider] = {}
KINDS = ("aws",)


def provider_for(kind: str = "aws") -> Provider:
    """The provider of a backend kind ("hosted" runs on the operator's AWS: "aws")."""
    kind = "aws" if kind == "hosted" else kind
    with _lock:
        if kind not in _providers:
            if kind != "aws":
                raise ValueError(f"unknown provider {kind!r}; known: {', '.join(KINDS)}")
            from overcast.backends.aws.provider import AwsProvider  # imports boto3: lazily

            _providers[kind] = AwsProvider()
        return _providers[kind]


def set_provider(kind: str, provider: Provider | None) -> None:
    """Replace (or with None, forget) the provider of `kind`: for tests with a fake cloud."""
    with _lock:
        if provider is None:
            _providers.pop(kind, None)
        else:
            _providers[kind] = provider


__all__ = ["KINDS", "Provider", "provider_for", "set_provider"]
