"""Pointsman as the routing brain of a LiteLLM Router: LiteLLM stays the gateway (keys, calls, its own logging),
and for each request Pointsman's `POST /v1/route` says which deployment should answer (README, "Route-only").

Each deployment of the model group names the Pointsman pool model it stands for in `model_info.id`. Runs in
LiteLLM's environment (litellm 1.108.7; nothing of Pointsman is imported).
"""

from __future__ import annotations

from typing import Any

import httpx
from litellm import Router
from litellm.types.router import CustomRoutingStrategyBase


class PointsmanRouting(CustomRoutingStrategyBase):
    """Ask Pointsman which pool model should answer; use the deployment whose model_info.id names it."""

    def __init__(self, router: Router, pointsman_url: str, policy: str = "auto", api_key: str | None = None) -> None:
        self.router, self.url, self.policy = router, pointsman_url.rstrip("/"), policy
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _body(self, messages: Any, request_kwargs: dict | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.policy, "messages": messages or []}
        for name in ("tools", "tool_choice", "response_format", "max_tokens", "temperature"):
            value = (request_kwargs or {}).get(name)
            if value is not None:
                body[name] = value
        return body

    def _deployment(self, decision: dict[str, Any], group: str) -> dict[str, Any]:
        deployments = [d for d in self.router.model_list if d["model_name"] == group]
        for deployment in deployments:
            if (deployment.get("model_info") or {}).get("id") == decision["model"]:
                return deployment
        return deployments[0]  # a pool model LiteLLM has no deployment for: the group's first

    async def async_get_available_deployment(self, model: str, messages: Any = None, input: Any = None,
                                             specific_deployment: bool | None = False,
                                             request_kwargs: dict | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(f"{self.url}/v1/route", json=self._body(messages, request_kwargs),
                                         headers=self.headers)
        response.raise_for_status()
        return self._deployment(response.json(), model)

    def get_available_deployment(self, model: str, messages: Any = None, input: Any = None,
                                 specific_deployment: bool | None = False,
                                 request_kwargs: dict | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/v1/route", json=self._body(messages, request_kwargs), headers=self.headers,
                              timeout=5)
        response.raise_for_status()
        return self._deployment(response.json(), model)


def make_router(pointsman_url: str, deployments: dict[str, dict[str, Any]]) -> Router:
    """A Router whose group "smart" holds one deployment per Pointsman pool model (name -> litellm_params)."""
    router = Router(model_list=[{"model_name": "smart", "litellm_params": params, "model_info": {"id": name}}
                                for name, params in deployments.items()])
    router.set_custom_routing_strategy(PointsmanRouting(router, pointsman_url))
    return router
